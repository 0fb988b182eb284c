package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// degradedCheck owns NodeguardDegraded: True while the agent cannot vouch
// for what it reports, so that a detector gone silent is not read as a
// healthy node (kubernetes/node-problem-detector#1168, #1174). It looks at
// the supervisor (a check, or the log source it reads, down past its
// restart backoff) and the event spool (events dropped for want of room).
type degradedCheck struct {
	// down lists the checks down past their restart backoff.
	down func() []string
	// dropped is when an event last found the spool full; nil or zero
	// when there is no spool or it never was.
	dropped func() time.Time
	period  time.Duration
	now     func() time.Time
}

const (
	degradedName   = "degraded"
	degradedPeriod = 10 * time.Second
	// dropWindow is how long the condition stays True after the spool
	// last dropped an event: as long as the EventsSuppressed summary's
	// interval, so that a steady overflow reads as one True spell.
	dropWindow = 5 * time.Minute
)

func (d *degradedCheck) Name() string { return degradedName }

func (d *degradedCheck) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.Degraded}
}

// Run says the agent's health every period until ctx ends.
func (d *degradedCheck) Run(ctx context.Context, emit func(finding.Finding)) error {
	// On the checks' shared grid, so that it wakes with them.
	t := time.NewTimer(checks.UntilTick(time.Now(), d.period))
	defer t.Stop()
	for {
		emit(d.verdict())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			t.Reset(checks.UntilTick(time.Now(), d.period))
		}
	}
}

func (d *degradedCheck) verdict() finding.Finding {
	var why []string
	if down := d.down(); len(down) > 0 {
		why = append(why, "checks down past their restart backoff: "+strings.Join(down, ", "))
	}
	if d.dropped != nil {
		if at := d.dropped(); !at.IsZero() && d.now().Sub(at) < dropWindow {
			why = append(why, fmt.Sprintf("the event spool was full at %s: events were dropped", at.UTC().Format(time.RFC3339)))
		}
	}
	if len(why) == 0 {
		return finding.Degraded.Healthy()
	}
	return finding.Condition(finding.Degraded.Type, finding.StatusTrue, "AgentDegraded", strings.Join(why, "; "))
}
