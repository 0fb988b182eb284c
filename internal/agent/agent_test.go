package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/cri"
	"github.com/nodeguard/nodeguard/pkg/config"
)

// The events' pod names come from the runtime the cri check is configured
// for, whether it runs or not, and from its default when nothing says.
func TestCRIEndpointIsTheCRICheckSetting(t *testing.T) {
	reg := checks.Registry{cri.Registration}
	for _, tt := range []struct {
		name, file string
		reg        checks.Registry
		want       string
	}{
		{"default", "", reg, cri.DefaultConfig().Endpoint},
		{"set", "checks:\n  cri:\n    endpoint: unix:///run/crio/crio.sock\n", reg, "unix:///run/crio/crio.sock"},
		{"set, check disabled", "checks:\n  cri:\n    enabled: false\n    endpoint: /run/k3s/containerd.sock\n", reg, "/run/k3s/containerd.sock"},
		{"a registry without the cri check", "", nil, cri.DefaultConfig().Endpoint},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), "config.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := config.Load(path, tt.reg)
			if err != nil {
				t.Fatal(err)
			}
			if got := criEndpoint(cfg); got != tt.want {
				t.Errorf("criEndpoint = %q, want %q", got, tt.want)
			}
		})
	}
}
