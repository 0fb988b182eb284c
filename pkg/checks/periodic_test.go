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

// WhileBusy calls while there is work, not at all once there is none, and
// again after a wake: the idle kernel log's loop must cost no wake-ups.
func TestWhileBusySleepsUntilWoken(t *testing.T) {
	const interval = 10 * time.Millisecond
	var calls atomic.Int32
	var work atomic.Int32 // calls left that say busy
	work.Store(3)
	w := NewWaker()
	stop := WhileBusy(context.Background(), interval, w, func(time.Time) time.Duration {
		calls.Add(1)
		return BusyFor(work.Add(-1) > 0, interval)
	})
	defer stop()
	waitCalls := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for calls.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%d calls after 5s, want %d", calls.Load(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitCalls(3)
	// Idle: 30 intervals pass with no call.
	time.Sleep(30 * interval)
	if got := calls.Load(); got != 3 {
		t.Fatalf("%d calls while idle, want 3: the loop kept waking", got)
	}
	// A wake while idle starts it again, for as long as it is busy.
	work.Store(2)
	w.Wake()
	waitCalls(5)
	time.Sleep(30 * interval)
	if got := calls.Load(); got != 5 {
		t.Fatalf("%d calls after the wake's work was done, want 5", got)
	}
}

// A wake that comes while fn runs and answers "idle" is not lost: fn is
// called again, so state a line left just then is looked at.
func TestWhileBusyKeepsAWakeFromDuringACall(t *testing.T) {
	w := NewWaker()
	var calls atomic.Int32
	second := make(chan struct{})
	stop := WhileBusy(context.Background(), time.Millisecond, w, func(time.Time) time.Duration {
		if calls.Add(1) == 1 {
			w.Wake() // a line fed while this call looks
		} else {
			select {
			case second <- struct{}{}:
			default:
			}
		}
		return 0
	})
	defer stop()
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("the wake during the first call was lost")
	}
}
