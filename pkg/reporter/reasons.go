package reporter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// reasonGate applies the user's settings per reason (reporter.reasons)
// before an event is spooled: off, a minimum of occurrences within a
// window, and an hourly budget. It counts what it holds back by choice;
// what the budget refuses the caller counts and summarises with what the
// spool had no room for. Its caller serialises it.
type reasonGate struct {
	reasons map[string]*reasonLimit
	held    *prometheus.CounterVec
}

// reasonLimit is one reason's settings and what they keep.
type reasonLimit struct {
	policy finding.EventPolicy
	// seen are the occurrences within the window, for minOccurrences.
	seen   []time.Time
	budget *rate.Limiter
}

type admission int

const (
	admitted admission = iota
	held
	overBudget
)

func newReasonGate(reasons map[string]finding.EventPolicy, reg prometheus.Registerer) *reasonGate {
	g := &reasonGate{
		reasons: map[string]*reasonLimit{},
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_held_total",
			Help: "Events not sent to the API server as reporter.reasons asks, by reason and why: disabled (enabled: false) or minOccurrences (fewer than that within the window so far).",
		}, []string{"reason", "why"}),
	}
	for reason, p := range reasons {
		rl := &reasonLimit{policy: p}
		if p.EventsPerHour > 0 {
			// The whole hour's budget may go in a burst, then it refills
			// evenly.
			rl.budget = rate.NewLimiter(rate.Every(time.Hour/time.Duration(p.EventsPerHour)), p.EventsPerHour)
		}
		g.reasons[reason] = rl
	}
	reg.MustRegister(g.held)
	return g
}

// admit says whether an event that stands for n occurrences goes on to
// the spool.
func (g *reasonGate) admit(reason string, n int, now time.Time) admission {
	rl := g.reasons[reason]
	if rl == nil {
		return admitted
	}
	p := rl.policy
	if p.Enabled != nil && !*p.Enabled {
		g.held.WithLabelValues(reason, "disabled").Add(float64(n))
		return held
	}
	if p.MinOccurrences > 1 {
		keep := rl.seen[:0]
		for _, t := range rl.seen {
			if now.Sub(t) < p.Window.Duration {
				keep = append(keep, t)
			}
		}
		for range min(n, p.MinOccurrences) {
			keep = append(keep, now)
		}
		if len(keep) < p.MinOccurrences {
			rl.seen = keep
			g.held.WithLabelValues(reason, "minOccurrences").Add(float64(n))
			return held
		}
		rl.seen = keep[:0]
	}
	if rl.budget != nil && !rl.budget.AllowN(now, 1) {
		return overBudget
	}
	return admitted
}
