package logrules

import (
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// QuietStart clears, once a check has run quietly for a rule's clearAfter,
// the conditions its rules clear after a quiet period.
//
// An engine keeps when each such condition last matched only in memory, and
// a check's engines start fresh on every run. The condition may be True all
// the same: kept from the Node by an agent that restarted, or kept by the
// reporter from the run before the supervisor restarted the check. Nothing
// would ever clear it. QuietStart sets it False, with its healthy default,
// if the check has said nothing at all about it since the run started; once
// the check has, the engine that spoke clears it in its own time.
//
// One QuietStart serves all of a check's engines (one per source or unit),
// which share the check's name in the reporter: an engine that never
// matched must not clear what a sibling raised. Types that some rule sets
// for good (no clearAfter) are left alone.
type QuietStart struct {
	mu      sync.Mutex
	pending map[string]quietClear
}

type quietClear struct {
	due             time.Time
	reason, message string
}

// NewQuietStart looks at all of a check's rules (of every engine it runs)
// and starts, at start, the quiet period of each condition type that every
// rule setting it clears after one. It takes the rules, not the engines,
// so that no engine is compiled for it.
func NewQuietStart(start time.Time, rules []Rule, specs []finding.ConditionDefault) *QuietStart {
	after := map[string]time.Duration{}
	permanent := map[string]bool{}
	for _, r := range rules {
		if r.Kind != finding.KindCondition {
			continue
		}
		if r.ClearAfter.Duration <= 0 {
			permanent[r.Condition] = true
			continue
		}
		after[r.Condition] = max(after[r.Condition], r.ClearAfter.Duration)
	}
	q := &QuietStart{pending: map[string]quietClear{}}
	for condType, d := range after {
		if permanent[condType] {
			continue
		}
		for _, c := range specs {
			if c.Type == condType {
				q.pending[condType] = quietClear{due: start.Add(d), reason: c.Reason, message: c.Message}
				break
			}
		}
	}
	return q
}

// Wrap returns emit, noting each condition the check reports: from then on
// its engine, not QuietStart, decides when it clears.
func (q *QuietStart) Wrap(emit func(finding.Finding)) func(finding.Finding) {
	return func(f finding.Finding) {
		if f.Kind == finding.KindCondition {
			q.mu.Lock()
			delete(q.pending, f.Type)
			q.mu.Unlock()
		}
		emit(f)
	}
}

// Expire returns, appended to out, the clears that are due by now.
func (q *QuietStart) Expire(now time.Time, out []finding.Finding) []finding.Finding {
	q.mu.Lock()
	defer q.mu.Unlock()
	for condType, p := range q.pending {
		if now.Before(p.due) {
			continue
		}
		delete(q.pending, condType)
		out = append(out, finding.Finding{Kind: finding.KindCondition, Type: condType, Status: finding.StatusFalse,
			Reason: p.reason, Message: p.message, Time: now})
	}
	return out
}

// NextDue returns when the next clear is due; zero when none is left.
func (q *QuietStart) NextDue() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	for _, p := range q.pending {
		if next.IsZero() || p.due.Before(next) {
			next = p.due
		}
	}
	return next
}

// ExpireTo hands what Expire clears at now to emit. The caller owns the
// ticker (checks.WhileBusy), so that the rule engine starts no goroutine.
func (q *QuietStart) ExpireTo(now time.Time, emit func(finding.Finding)) {
	for _, f := range q.Expire(now, nil) {
		emit(f)
	}
}
