package checks

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNoData means a probe found nothing to look at (no such device, a file
// the kernel does not have): not an error, and no finding.
var ErrNoData = errors.New("no data")

// Probe looks at the node once and returns what it found.
type Probe func(ctx context.Context) ([]Finding, error)

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
func RunPeriodic(ctx context.Context, period, timeout time.Duration, probe Probe, emit func(Finding), stuck func(*ProbeStuck), failed func(error)) error {
	type result struct {
		findings []Finding
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
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	start()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-inflight:
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
			stuck(&ProbeStuck{Since: started})
		case <-ticker.C:
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
