package cri

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/criconn"
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
	conn := criconn.New(cfg.Endpoint)
	defer conn.Close()
	p := &prober{c: New(cfg, checks.Env{Log: zaptest.NewLogger(t)}), verdict: &verdict{emit: out.emit, endpoint: cfg.Endpoint}, runtime: conn.Runtime()}
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

// TestCallsProbe asks the fake as the calls' probe does, with a threshold
// of one.
func TestCallsProbe(t *testing.T) {
	for _, tc := range []struct {
		name            string
		setup           func(f *fakeRuntime)
		status          finding.Status
		reason, message string
	}{{
		name:   "a runtime that answers",
		status: finding.StatusFalse, reason: "ContainerRuntimeIsResponsive", message: "answers CRI Version, Status and ListPodSandbox",
	}, {
		name:   "a hung Version",
		setup:  func(f *fakeRuntime) { f.hang["Version"] = true },
		status: finding.StatusTrue, reason: "Timeout", message: "CRI Version on unix://",
	}, {
		name:   "a failing ListPodSandbox",
		setup:  func(f *fakeRuntime) { f.errs["ListPodSandbox"] = status.Error(codes.Internal, "sandbox store broken") },
		status: finding.StatusTrue, reason: "RuntimeError", message: "sandbox store broken",
	}, {
		name: "RuntimeReady false",
		setup: func(f *fakeRuntime) {
			f.conditions = []*runtimeapi.RuntimeCondition{{Type: runtimeapi.RuntimeReady, Reason: "Starting"}, {Type: runtimeapi.NetworkReady, Status: true}}
		},
		status: finding.StatusTrue, reason: "RuntimeNotReady", message: "RuntimeReady=false: Starting",
	}, {
		name: "NetworkReady false",
		setup: func(f *fakeRuntime) {
			f.conditions = []*runtimeapi.RuntimeCondition{{Type: runtimeapi.RuntimeReady, Status: true}, {Type: runtimeapi.NetworkReady, Reason: "NoCNI"}}
		},
		status: finding.StatusTrue, reason: "NetworkNotReady", message: "NetworkReady=false: NoCNI",
	}, {
		name: "no RuntimeReady condition",
		setup: func(f *fakeRuntime) {
			f.conditions = []*runtimeapi.RuntimeCondition{{Type: runtimeapi.NetworkReady, Status: true}}
		},
		status: finding.StatusTrue, reason: "RuntimeError", message: "no RuntimeReady condition",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f, endpoint := startFake(t)
			if tc.setup != nil {
				f.set(tc.setup)
			}
			cfg := DefaultConfig()
			cfg.Endpoint = endpoint
			cfg.Timeout = finding.Duration{Duration: 200 * time.Millisecond}
			cfg.FailureThreshold = 1
			conn := criconn.New(endpoint)
			defer conn.Close()
			var out findings
			p := &prober{c: New(cfg, checks.Env{Log: zaptest.NewLogger(t)}), verdict: &verdict{emit: out.emit, endpoint: endpoint}, runtime: conn.Runtime()}
			if _, err := p.probe(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := out.take()
			if len(got) != 1 || got[0].Status != tc.status || got[0].Reason != tc.reason || !strings.Contains(got[0].Message, tc.message) {
				t.Errorf("probe = %+v, want %s %s with %q", got, tc.status, tc.reason, tc.message)
			}
			if f.listedAll() {
				t.Error("ListPodSandbox asked for every sandbox of the node")
			}
		})
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
