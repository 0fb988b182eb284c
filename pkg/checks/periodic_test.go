package checks

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestRunPeriodicNeverStacksStuckProbes(t *testing.T) {
	var (
		runs    atomic.Int32
		release = make(chan struct{})
		mu      sync.Mutex
		stuck   []*ProbeStuck
		emitted []finding.Finding
		failed  []error
	)
	probe := func(ctx context.Context) ([]finding.Finding, error) {
		switch runs.Add(1) {
		case 1:
			return []finding.Finding{finding.Condition("X", finding.StatusFalse, "Fine", "")}, nil
		case 2:
			<-release // hangs past its deadline, ignoring ctx, as a write to a frozen disk does
			return []finding.Finding{finding.Condition("X", finding.StatusFalse, "Fine", "late")}, nil
		case 3:
			return nil, ErrNoData
		default:
			return nil, errors.New("broken")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- RunPeriodic(ctx, 20*time.Millisecond, 30*time.Millisecond, probe,
			func(f finding.Finding) { mu.Lock(); emitted = append(emitted, f); mu.Unlock() },
			func(s *ProbeStuck) { mu.Lock(); stuck = append(stuck, s); mu.Unlock() },
			func(err error) { mu.Lock(); failed = append(failed, err); mu.Unlock() })
	}()
	time.Sleep(300 * time.Millisecond)
	if got := runs.Load(); got != 2 {
		t.Errorf("%d probes started while one was stuck, want 2: no new probe until the stuck one returns", got)
	}
	mu.Lock()
	nStuck := len(stuck)
	mu.Unlock()
	if nStuck < 5 {
		t.Errorf("stuck reported %d times in 300 ms, want at its deadline and on each tick after", nStuck)
	}
	close(release)
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(emitted) != 2 || emitted[1].Message != "late" {
		t.Errorf("emitted %+v, want the first result and the stuck probe's late one", emitted)
	}
	if runs.Load() < 4 || len(failed) == 0 {
		t.Errorf("after the stuck probe returned: %d runs, %d failures; want probing to resume and errors (not ErrNoData) reported", runs.Load(), len(failed))
	}
}
