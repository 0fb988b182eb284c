package checks

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
)

// scriptCheck fails in a chosen way on its first runs, then emits a
// finding and waits for shutdown.
type scriptCheck struct {
	name     string
	failures []string // "panic", "error", "exit": one per early run
	runs     atomic.Int32
	ignore   bool // ignores ctx and never returns
}

func (c *scriptCheck) Name() string                           { return c.name }
func (c *scriptCheck) Conditions() []finding.ConditionDefault { return nil }
func (c *scriptCheck) Run(ctx context.Context, emit func(finding.Finding)) error {
	n := int(c.runs.Add(1)) - 1
	if n < len(c.failures) {
		switch c.failures[n] {
		case "panic":
			panic("boom")
		case "error":
			return errors.New("broken")
		case "exit":
			return nil
		}
	}
	emit(finding.Event(finding.SeverityWarning, "Alive", c.name+" is running"))
	emit(finding.Finding{Kind: finding.KindCondition, Type: "X"}) // invalid: no status, no reason
	if c.ignore {
		select {}
	}
	<-ctx.Done()
	return nil
}

func TestSupervisorRestartsFailedChecksAndKeepsOthersRunning(t *testing.T) {
	tests := []struct {
		name     string
		failures []string
	}{
		{"panics", []string{"panic"}},
		{"errors", []string{"error", "error"}},
		{"exits early", []string{"exit"}},
		{"healthy", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := &scriptCheck{name: "bad", failures: tt.failures}
			good := &scriptCheck{name: "good"}
			reg := prometheus.NewRegistry()
			var (
				mu    sync.Mutex
				alive = map[string]int{}
			)
			sup := &Supervisor{
				Checks: []Check{bad, good},
				Emit: func(f finding.Finding) {
					mu.Lock()
					defer mu.Unlock()
					if f.Time.IsZero() {
						t.Errorf("finding from %s has no time", f.Check)
					}
					alive[f.Check]++
				},
				Log:            zaptest.NewLogger(t),
				Metrics:        NewSupervisorMetrics(reg),
				InitialBackoff: 10 * time.Millisecond,
				MaxBackoff:     40 * time.Millisecond,
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan []string)
			go func() { done <- sup.Run(ctx, time.Second) }()
			deadline := time.Now().Add(5 * time.Second)
			for {
				mu.Lock()
				n := alive["bad"] + alive["good"]
				mu.Unlock()
				if n == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("findings after 5 s: %v; want one from each check", alive)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if stuck := <-done; len(stuck) != 0 {
				t.Errorf("stuck checks %v, want none", stuck)
			}
			if got, want := int(bad.runs.Load()), len(tt.failures)+1; got != want {
				t.Errorf("bad check ran %d times, want %d", got, want)
			}
			if got := good.runs.Load(); got != 1 {
				t.Errorf("good check ran %d times, want 1: a failing neighbour must not restart it", got)
			}
			for _, how := range []string{"panic", "error", "exit"} {
				want := 0
				for _, f := range tt.failures {
					if f == how {
						want++
					}
				}
				if got := testutil.ToFloat64(sup.Metrics.failures.WithLabelValues("bad", how)); int(got) != want {
					t.Errorf("nodeguard_check_errors_total{check=bad,how=%s} = %v, want %d", how, got, want)
				}
			}
			if got := testutil.ToFloat64(sup.Metrics.findings.WithLabelValues("good", "invalid")); got != 1 {
				t.Errorf("invalid findings counted %v, want 1 (and dropped)", got)
			}
		})
	}
}

func TestSupervisorGivesUpOnACheckThatIgnoresShutdown(t *testing.T) {
	stuck := &scriptCheck{name: "stuck", ignore: true}
	sup := &Supervisor{Checks: []Check{stuck}, Emit: func(finding.Finding) {}, Log: zaptest.NewLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []string)
	go func() { done <- sup.Run(ctx, 100*time.Millisecond) }()
	for stuck.runs.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case names := <-done:
		if len(names) != 1 || names[0] != "stuck" {
			t.Errorf("Run returned %v, want [stuck]", names)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its stop timeout")
	}
}

func TestFindingValidate(t *testing.T) {
	tests := []struct {
		f  finding.Finding
		ok bool
	}{
		{finding.Event(finding.SeverityWarning, "OOMKilling", "x"), true},
		{finding.Event(finding.SeverityWarning, "", "x"), false},
		{finding.Condition("KernelDeadlock", finding.StatusTrue, "Hung", "x"), true},
		{finding.Condition("KernelDeadlock", "Maybe", "Hung", "x"), false},
		{finding.Condition("", finding.StatusTrue, "Hung", "x"), false},
		{finding.Condition("KernelDeadlock", finding.StatusFalse, "", "x"), false},
		{finding.Finding{Kind: "state", Reason: "x"}, false},
	}
	for _, tt := range tests {
		if err := tt.f.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tt.f, err, tt.ok)
		}
	}
}

// hangingCheck's probe hangs until released, as a write to a dead disk does.
type hangingCheck struct{ release chan struct{} }

func (c *hangingCheck) Name() string                           { return "hanging" }
func (c *hangingCheck) Conditions() []finding.ConditionDefault { return nil }
func (c *hangingCheck) Run(ctx context.Context, emit func(finding.Finding)) error {
	first := true
	return RunPeriodic(ctx, 20*time.Millisecond, 50*time.Millisecond, func(context.Context) ([]finding.Finding, error) {
		if first {
			first = false
			<-c.release
		}
		return nil, nil
	}, emit, func(*ProbeStuck) {}, func(error) {})
}

func TestSupervisorReportsStuckProbesAndDownChecks(t *testing.T) {
	hang := &hangingCheck{release: make(chan struct{})}
	broken := &scriptCheck{name: "broken", failures: []string{"error", "error", "error", "error", "error", "error", "error", "error"}}
	var (
		mu    sync.Mutex
		stuck []finding.Finding
	)
	reg := prometheus.NewRegistry()
	sup := &Supervisor{
		Checks: []Check{hang, broken},
		Emit: func(f finding.Finding) {
			if f.Type == finding.CheckStuck.Type {
				mu.Lock()
				stuck = append(stuck, f)
				mu.Unlock()
			}
		},
		Log: zaptest.NewLogger(t), Metrics: NewSupervisorMetrics(reg),
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []string)
	go func() { done <- sup.Run(ctx, time.Second) }()
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if len(stuck) != 2 || stuck[0].Status != finding.StatusFalse || stuck[1].Status != finding.StatusTrue || !strings.Contains(stuck[1].Message, "hanging") {
		t.Errorf("while the probe hangs: %+v, want NodeguardCheckStuck False at start, then one True naming the check", stuck)
	}
	mu.Unlock()
	if got := testutil.ToFloat64(sup.Metrics.stuck.WithLabelValues("hanging")); got != 1 {
		t.Errorf("nodeguard_check_stuck{check=hanging} = %v, want 1", got)
	}
	if down := sup.Down(50 * time.Millisecond); len(down) != 1 || !strings.HasPrefix(down[0], "broken") {
		t.Errorf("Down = %v, want the broken check only", down)
	}
	close(hang.release)
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	if n := len(stuck); n != 3 || stuck[2].Status != finding.StatusFalse {
		t.Errorf("after the probe returned: %+v, want NodeguardCheckStuck False", stuck)
	}
	mu.Unlock()
	cancel()
	<-done
}
