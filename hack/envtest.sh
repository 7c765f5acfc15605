#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager,
# etcd) from the pinned Go modules in hack/tools into $ENVTEST_DIR.
#
# There is no binary download here: the binaries come from source. The first
# build takes 15-20 minutes on a 2-core machine; after that a run finds the
# binaries and their version stamp in place and returns in seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/hack/tools"
dir=${ENVTEST_DIR:-$root/bin/k8s}
k8s_version=v1.37.2
etcd_version=v3.7.0
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

mkdir -p "$dir"

# The stamp records what the binaries were built from, so a change to
# hack/tools/go.mod (a version bump) rebuilds them and nothing else does.
stamp="$(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -d' ' -f1)"

log() { printf '[envtest %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

build() { # name package
  local name=$1 pkg=$2
  if [[ -x "$dir/$name" && "$(cat "$dir/.$name.stamp" 2>/dev/null)" == "$stamp" ]]; then
    log "$name is up to date"
    return
  fi
  log "building $name from $pkg (the first build of a control plane takes 15-20 minutes)"
  local start=$SECONDS
  (cd "$tools" && go build -trimpath -ldflags "$ldflags" -o "$dir/$name.tmp" "$pkg")
  mv "$dir/$name.tmp" "$dir/$name"
  echo "$stamp" > "$dir/.$name.stamp"
  log "built $name in $((SECONDS - start))s"
}

log "downloading modules for kubernetes $k8s_version and etcd $etcd_version"
(cd "$tools" && go mod download)
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
log "control plane ready in $dir"
"$dir/kube-apiserver" --version
