package cri

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestFailuresMustRepeatBeforeTheConditionTurns(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Endpoint = "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	cfg.FailureThreshold = 3
	p := &prober{c: New(cfg, checks.Env{Log: zaptest.NewLogger(t)})}
	for i := 1; i <= 4; i++ {
		got, err := p.probe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 && len(got) != 0 {
			t.Errorf("probe %d reported %+v before the threshold", i, got)
		}
		if i >= 3 && (len(got) != 1 || got[0].Status != finding.StatusTrue || got[0].Reason != "SocketMissing") {
			t.Errorf("probe %d = %+v, want ContainerRuntimeUnresponsive True, SocketMissing", i, got)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, mutate := range []func(*Config){
		func(c *Config) { c.Endpoint = "" },
		func(c *Config) { c.FailureThreshold = 0 },
		func(c *Config) { c.Timeout = finding.Duration{} },
	} {
		cfg := DefaultConfig()
		mutate(cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("Validate accepted %+v", cfg)
		}
	}
}
