//go:build tools

// Package tools pins the helm command hack/ builds from this module.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
