# k8s-elector: the elector sidecar and the injector webhook.
#
# `make demo` runs the whole system on a local control plane; `make test`
# runs every test. Both build that control plane from source first (once,
# 15-20 minutes; later runs reuse bin/k8s).

export GOTOOLCHAIN := local
export CGO_ENABLED ?= 1

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMG ?= ghcr.io/vapor-ware/k8s-elector:$(VERSION)
INJECTOR_IMG ?= ghcr.io/vapor-ware/k8s-elector-injector:$(VERSION)

BIN := $(CURDIR)/bin
ENVTEST_DIR := $(BIN)/k8s
export KUBEBUILDER_ASSETS := $(ENVTEST_DIR)

LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/elector and bin/injector.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/elector ./cmd/elector
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/injector ./cmd/injector

.PHONY: envtest
envtest: ## Build the local control plane (etcd, kube-apiserver, kube-controller-manager) into bin/k8s.
	ENVTEST_DIR=$(ENVTEST_DIR) hack/envtest.sh

.PHONY: test
test: envtest ## Run the unit and integration tests (with -race) against the local control plane.
	go test -race -count=1 -timeout 30m ./...

.PHONY: lint
lint: ## go vet, gofmt and staticcheck.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	go run $(STATICCHECK) ./...

.PHONY: bench
bench: envtest build ## Run the benchmarks and print their tables.
	go run ./bench -elector=bin/elector

.PHONY: demo
demo: envtest build ## Run the injector and an annotated Deployment on a local control plane.
	go run ./hack/demo

.PHONY: clean
clean: ## Remove build outputs (keeps the control plane in bin/k8s).
	rm -f $(BIN)/elector $(BIN)/injector
	rm -rf dist
