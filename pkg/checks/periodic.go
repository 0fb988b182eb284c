package checks

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"go.uber.org/zap"
)

// ErrNoData means a probe found nothing to look at (no such device, a file
// the kernel does not have): not an error, and no finding.
var ErrNoData = errors.New("no data")

// Probe looks at the node once and returns what it found.
type Probe func(ctx context.Context) ([]finding.Finding, error)

// ProbeStuck is the error RunPeriodic reports for a probe that has not
// returned by its deadline. Probes that read procfs or sysfs never block,
// but one that writes to a disk can hang in the kernel for as long as the
// disk does.
type ProbeStuck struct {
	Since time.Time
}

func (e *ProbeStuck) Error() string {
	return fmt.Sprintf("probe still running, stuck since %s", e.Since.Format(time.RFC3339))
}

// RunPeriodic runs probe at once and then every period until ctx ends,
// handing its findings to emit. Each run gets timeout; a run that has not
// returned by then is left running (a goroutine blocked in the kernel cannot
// be stopped) and, until it returns, every tick calls stuck instead of
// starting another, so that a hung disk costs one goroutine, not one per
// period. Errors other than ErrNoData go to failed; the loop carries on.
func RunPeriodic(ctx context.Context, period, timeout time.Duration, probe Probe, emit func(finding.Finding), stuck func(*ProbeStuck), failed func(error)) error {
	type result struct {
		findings []finding.Finding
		err      error
	}
	var (
		inflight chan result // non-nil while a run has not returned
		deadline <-chan time.Time
		started  time.Time
	)
	start := func() {
		done := make(chan result, 1)
		inflight, started = done, time.Now()
		deadline = time.After(timeout)
		go func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			f, err := probe(pctx)
			done <- result{f, err}
		}()
	}
	ticker := time.NewTimer(UntilTick(time.Now(), period))
	defer ticker.Stop()
	start()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-inflight:
			if deadline == nil {
				reportStuck(ctx, time.Time{}) // it was stuck, and has returned
			}
			inflight, deadline = nil, nil
			switch {
			case r.err == nil:
				for _, f := range r.findings {
					emit(f)
				}
			case !errors.Is(r.err, ErrNoData):
				failed(r.err)
			}
		case <-deadline:
			deadline = nil
			reportStuck(ctx, started)
			stuck(&ProbeStuck{Since: started})
		case <-ticker.C:
			ticker.Reset(UntilTick(time.Now(), period))
			switch {
			case inflight == nil:
				start()
			case deadline == nil:
				// Past its deadline and still running: stuck again. A run
				// within its timeout is only slow, and is left alone.
				stuck(&ProbeStuck{Since: started})
			}
		}
	}
}

// tickPhase places every periodic check's ticks on one grid, drawn once per
// process: checks of the same period (and of periods that are multiples of
// one another) look at the node in the same instant, so the idle agent
// wakes once for all of them rather than once for each, at start times
// that happened to differ by milliseconds. Drawn at random so that a
// fleet's nodes do not all ask the cluster DNS in the same second.
var tickPhase = time.Duration(rand.Int64N(int64(24 * time.Hour)))

// UntilTick is how long from now until the next tick of period on the
// grid that every periodic loop of the agent shares.
func UntilTick(now time.Time, period time.Duration) time.Duration {
	into := (time.Duration(now.UnixNano()) - tickPhase) % period
	if into < 0 {
		into += period
	}
	return period - into
}

// RunLogged is RunPeriodic for checks that only log a stuck or failed
// probe; what names the probe in the log.
func RunLogged(ctx context.Context, log *zap.Logger, what string, period, timeout time.Duration, probe Probe, emit func(finding.Finding)) error {
	return RunPeriodic(ctx, period, timeout, probe, emit,
		func(s *ProbeStuck) { log.Warn(what+" is stuck", zap.Error(s)) },
		func(err error) { log.Warn(what+" failed", zap.Error(err)) })
}

// ProbeSettings time a check that asks something every period, each ask
// bounded by a timeout, and counts failures in a row before it reports.
type ProbeSettings struct {
	Period           finding.Duration `json:"period,omitempty"`
	Timeout          finding.Duration `json:"timeout,omitempty"`
	FailureThreshold int              `json:"failureThreshold,omitempty"`
}

// Validate checks the settings.
func (s ProbeSettings) Validate() error {
	switch {
	case s.Period.Duration < 100*time.Millisecond:
		return &finding.FieldError{Field: "period", Value: s.Period, Reason: "must be at least 100ms"}
	case s.Timeout.Duration <= 0:
		return &finding.FieldError{Field: "timeout", Value: s.Timeout, Reason: "must be above zero"}
	case s.FailureThreshold < 1:
		return &finding.FieldError{Field: "failureThreshold", Value: s.FailureThreshold, Reason: "must be at least 1"}
	}
	return nil
}

// InARow counts failures in a row.
type InARow struct{ n int }

// Fail counts one and says whether threshold are reached.
func (r *InARow) Fail(threshold int) bool { r.n++; return r.n >= threshold }

// Reset starts the count over after a success.
func (r *InARow) Reset() { r.n = 0 }

// Judge turns one look at a condition into findings: False with its healthy
// reason at once when problem is empty; True with badReason and the problem only once
// threshold looks in a row have found one; nothing in between, so that one
// slow answer does not flap the condition.
func (r *InARow) Judge(threshold int, cond finding.ConditionDefault, okMessage, badReason, problem string) []finding.Finding {
	if problem == "" {
		r.Reset()
		return []finding.Finding{finding.Condition(cond.Type, finding.StatusFalse, cond.Reason, okMessage)}
	}
	if !r.Fail(threshold) {
		return nil
	}
	f := finding.Condition(cond.Type, finding.StatusTrue, badReason, problem)
	// The failing probe, for the evidence of the transition.
	f.Facts = map[string]string{"failedProbe": problem, "failuresInARow": strconv.Itoa(r.n), "failureThreshold": strconv.Itoa(threshold)}
	return []finding.Finding{f}
}

// Waker wakes a WhileBusy loop that went to sleep because it had nothing
// left to do. Wake never blocks, so a log source may call it for every line.
type Waker struct{ c chan struct{} }

// NewWaker returns a Waker for one WhileBusy loop.
func NewWaker() *Waker { return &Waker{c: make(chan struct{}, 1)} }

// Wake tells the loop there may be work again.
func (w *Waker) Wake() {
	select {
	case w.c <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// UntilDue is the wait WhileBusy's fn returns for work due at a time: none
// when due is zero, and at least a millisecond when it is already past, so
// that a clock that reads early still gets another look.
func UntilDue(due, now time.Time) time.Duration {
	if due.IsZero() {
		return 0
	}
	return max(due.Sub(now), time.Millisecond)
}

// BusyFor is the wait WhileBusy's fn returns: interval while busy, none
// otherwise.
func BusyFor(busy bool, interval time.Duration) time.Duration {
	if busy {
		return interval
	}
	return 0
}

// WhileBusy calls fn first one interval after the start, and then again
// after the wait fn returns, for as long as fn says work is left (a report
// still open, a condition waiting out its quiet period, a log position not
// yet saved); a wait of zero or less means none is, and the next call is
// one interval after w is woken. A ticker would wake an idle agent every
// interval for nothing; a quiet log costs no wake-ups this way. stop waits
// for a call in progress.
func WhileBusy(ctx context.Context, interval time.Duration, w *Waker, fn func(now time.Time) (wait time.Duration)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if wait := fn(now); wait > 0 {
					t.Reset(wait)
					continue
				}
			}
			// Asleep. A wake that came while fn ran is still in the
			// channel, so none is lost between fn's answer and this wait.
			select {
			case <-ctx.Done():
				return
			case <-w.c:
				t.Reset(interval)
			}
		}
	}()
	return func() { cancel(); <-done }
}
