//go:build tools

// Package tools pins the sources of the local control plane that the tests
// and the demo run: kube-apiserver and kube-controller-manager from
// k8s.io/kubernetes, and etcd. hack/envtest.sh builds them from this module.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
