package cri

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// findings collects what a verdict emits.
type findings struct {
	mu  sync.Mutex
	all []finding.Finding
}

func (f *findings) emit(x finding.Finding) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = append(f.all, x)
}

func (f *findings) take() []finding.Finding {
	f.mu.Lock()
	defer f.mu.Unlock()
	all := f.all
	f.all = nil
	return all
}

func TestFailuresMustRepeatBeforeTheConditionTurns(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Endpoint = "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	cfg.FailureThreshold = 3
	var out findings
	p := &prober{c: New(cfg, checks.Env{Log: zaptest.NewLogger(t)}), verdict: &verdict{emit: out.emit, endpoint: cfg.Endpoint}}
	for i := 1; i <= 4; i++ {
		if _, err := p.probe(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := out.take()
		if i < 3 && len(got) != 0 {
			t.Errorf("probe %d reported %+v before the threshold", i, got)
		}
		if i >= 3 && (len(got) != 1 || got[0].Status != finding.StatusTrue || got[0].Reason != "SocketMissing") {
			t.Errorf("probe %d = %+v, want ContainerRuntimeUnresponsive True, SocketMissing", i, got)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		field  string // "": valid
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Endpoint = "" }, "endpoint"},
		{func(c *Config) { c.FailureThreshold = 0 }, "failureThreshold"},
		{func(c *Config) { c.Timeout = finding.Duration{} }, "timeout"},
		{func(c *Config) { c.SandboxPeriod = finding.Duration{Duration: 500 * time.Millisecond} }, "sandboxPeriod"},
		{func(c *Config) { c.SandboxTimeout = finding.Duration{} }, "sandboxTimeout"},
		// Off: its timeout no longer matters.
		{func(c *Config) { c.SandboxPeriod, c.SandboxTimeout = finding.Duration{}, finding.Duration{} }, ""},
	} {
		cfg := DefaultConfig()
		tc.mutate(cfg)
		err := cfg.Validate()
		var fe *finding.FieldError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("Validate(%+v) = %v, want it accepted", cfg, err)
		case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
			t.Errorf("Validate(%+v) = %v, want a FieldError on %s", cfg, err, tc.field)
		}
	}
}
