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
GOLANGCI := github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

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
test: envtest ## Run the unit and integration tests (with -race) against the local control plane, and 3000 simulated elections.
	go test -race -count=1 -timeout 30m ./...
	go test -count=1 -run '^TestSim' ./pkg/election -sim.schedules=3000
	cd test/prometheus && go test -count=1 -timeout 10m ./...

# The packages whose tests need no control plane: the inner loop.
UNIT_PKGS = $(shell go list ./... | grep -v -e /test/ -e /hack/demo -e /internal/controlplane)

.PHONY: test-unit
test-unit: ## Run the tests that need no control plane (under a minute).
	env -u KUBEBUILDER_ASSETS go test -count=1 $(UNIT_PKGS)

SIM_SCHEDULES ?= 100000
SIM_BASE ?= $(shell date +%s)

.PHONY: simulate
simulate: ## Run SIM_SCHEDULES simulated elections from seed SIM_BASE; failures print their replay command and are kept in pkg/election/testdata/sim.
	go test ./pkg/election -run '^TestSimulate$$' -count=1 -timeout 0 -v \
		-sim.schedules=$(SIM_SCHEDULES) -sim.base=$(SIM_BASE) -sim.keep -sim.maxfail=20

FUZZTIME ?= 1m
# The packages with Fuzz targets: every input the API server or a pod
# author controls is fuzzed there.
FUZZ_PKGS = ./pkg/election ./pkg/webhook

.PHONY: fuzz
fuzz: ## Run every Fuzz target for FUZZTIME each; a failing input is kept in the package's testdata/fuzz, which make test replays.
	@for pkg in $(FUZZ_PKGS); do \
		for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			go test $$pkg -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s || exit 1; \
		done; \
	done

.PHONY: lint
lint: ## go vet, gofmt, golangci-lint (pinned; .golangci.yml), and staticcheck on the test/prometheus module.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	go run $(GOLANGCI) run ./...
	cd test/prometheus && go vet ./... && go run $(STATICCHECK) ./...

.PHONY: bench
bench: envtest build ## Run the benchmarks and print their tables.
	go run ./bench -elector=bin/elector
	go test -run '^$$' -bench . -benchtime 20000x ./pkg/webhook/
	go run ./bench/injector -injector=bin/injector
	go run ./hack/rollouts -bin=bin -rollouts=$(ROLLOUTS)

ROLLOUTS ?= 20

.PHONY: rollouts
rollouts: envtest build ## Count leader changes over ROLLOUTS rollouts of each Deployment and StatefulSet shape, with the one-handover mechanism on and off.
	go run ./hack/rollouts -bin=bin -rollouts=$(ROLLOUTS)

DURATION ?= 3m
SEED ?=

.PHONY: chaos
chaos: envtest build ## Run elections under random faults for DURATION (SEED=n replays a schedule); fails on two leaders at once.
	go run ./hack/chaos -elector=bin/elector -duration=$(DURATION) $(if $(SEED),-seed=$(SEED))

SIZES ?=

.PHONY: scale
scale: envtest build ## Measure elections x participants (10x3 to 100x3) on one local control plane; a row per size (SIZES=100x3 to choose).
	KUBEBUILDER_CONTROLPLANE_START_TIMEOUT=180s go run ./hack/scale -elector=bin/elector $(if $(SIZES),-sizes=$(SIZES))

# The demo is built and run rather than `go run`, so that its exit status is
# make's. On a terminal it takes Ctrl-C for itself (hack/demo/cmd/terminal.go):
# make, sent SIGINT too, would end with status 130 whatever the demo did.
.PHONY: demo
demo: envtest build ## Run the injector and an annotated Deployment on a local control plane, with a live table of its electors; Ctrl-C stops it.
	go build -o $(BIN)/demo ./hack/demo/cmd
	$(BIN)/demo -bin=$(BIN)

RENDER := go run ./hack/render/cmd -injector-image=$(INJECTOR_IMG) -elector-image=$(IMG)

.PHONY: build-installer
build-installer: ## Write dist/install.yaml: config/default with IMG and INJECTOR_IMG.
	mkdir -p dist
	$(RENDER) config/default > dist/install.yaml

.PHONY: deploy
deploy: ## Install the injector into the current kubectl context with IMG and INJECTOR_IMG.
	$(RENDER) config/default | kubectl apply -f -

.PHONY: undeploy
undeploy: ## Remove the injector from the current kubectl context.
	$(RENDER) config/default | kubectl delete --ignore-not-found -f -

.PHONY: docker-build
docker-build: ## Build the images IMG (elector) and INJECTOR_IMG (needs a Docker engine).
	docker build -f Dockerfile.elector --build-arg VERSION=$(VERSION) -t $(IMG) .
	docker build -f Dockerfile.injector --build-arg VERSION=$(VERSION) -t $(INJECTOR_IMG) .

.PHONY: docker-push
docker-push: ## Push IMG and INJECTOR_IMG.
	docker push $(IMG)
	docker push $(INJECTOR_IMG)

.PHONY: clean
clean: ## Remove build outputs (keeps the control plane in bin/k8s).
	rm -f $(BIN)/elector $(BIN)/injector $(BIN)/demo
	rm -rf dist
