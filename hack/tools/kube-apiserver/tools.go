//go:build tools

// Package tools pins the commands hack/ builds from this module: the API
// server and kubectl for integration tests, and the kubelet, controller-manager
// and scheduler that make the real node of the e2e tests.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
