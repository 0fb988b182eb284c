// Package reporter is nodeguard's single writer. Checks hand it findings; it
// owns the state of the condition types the checks own, drops what changes
// nothing, and hands every sink the same snapshot and then the same changes:
// the API server, stdout, Prometheus, remediation.
package reporter

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"go.uber.org/zap"
)

// Condition is the reporter's state of one owned condition type.
type Condition struct {
	// Finding is what set the state: the merged finding of the type's
	// sources, or, before any check has spoken, the state found on the
	// Node or the healthy default (with no Check).
	finding.Finding
	// Since is when Status last changed: the Node's lastTransitionTime.
	Since time.Time
}

// State is the reporter's condition state as sinks read it. A sink may read
// it from any goroutine once it has been started, but never from inside its
// own Event or Changed: they are called in order, one at a time.
type State interface {
	// Conditions lists every owned type once, in the order of the owners.
	Conditions() []Condition
	// Condition returns one owned type's state.
	Condition(condType string) (Condition, bool)
}

// Sink receives what the reporter passes on. No method may block: a sink
// that talks to the network or acts on the node does so from a goroutine of
// its own.
type Sink interface {
	// Start is called once, before anything else, with the state every
	// owned type starts from.
	Start(state State)
	// Event receives each event finding in order.
	Event(f finding.Finding)
	// Changed receives each condition whose state changed, with its new
	// state.
	Changed(c Condition)
}

// EarlyEventSink is a Sink that takes events before Start as well: the
// node sink spools them to disk at once, so that an agent killed before it
// could read the Node (an API server outage at start) loses none of them.
// Its other calls keep Sink's order.
type EarlyEventSink interface {
	Sink
	TakesEventsBeforeStart()
}

func early(s Sink) bool {
	_, ok := s.(EarlyEventSink)
	return ok
}

// Reporter merges and dedupes condition findings and passes the changes and
// every event to its sinks. It is the one owner of the condition state:
// sinks read it (State) rather than keep their own copy.
//
// A condition type may have several sources: ReadonlyFilesystem comes from
// the kernel log (a remount after errors) and from the mount table. Each
// check's latest word on a type is kept, and the type is True while any of
// them says True, so that one source saying all is well cannot hide a
// problem another sees.
type Reporter struct {
	log      *zap.Logger
	sinks    []Sink
	defaults []finding.ConditionDefault
	now      func() time.Time

	// mu orders Report and Start: sinks see one call at a time.
	mu sync.Mutex
	// byCheck holds each check's latest finding per type.
	byCheck map[string]map[string]finding.Finding

	// stateMu guards state alone, so that sinks can read it while mu is
	// held by the call that is telling them of a change.
	stateMu sync.RWMutex
	state   map[string]Condition
	started bool

	// Before Start, the checks already run (reading the Node may wait out
	// an API server outage, and a log source must not fall behind): their
	// condition findings wait in byCheck, their events here, and Start
	// applies them over the state it starts from.
	early        []finding.Finding
	earlyDropped int
}

// maxEarlyEvents bounds the events kept before Start; a flood while the
// Node cannot be read is logged past it, not kept.
const maxEarlyEvents = 1000

// New returns a reporter for the given owned condition types; a type may
// appear once per check that owns it. Findings reported before Start are
// held and applied by Start.
func New(log *zap.Logger, owned []finding.ConditionDefault, sinks ...Sink) *Reporter {
	return &Reporter{log: log, sinks: sinks, defaults: UniqueDefaults(owned), now: time.Now,
		byCheck: map[string]map[string]finding.Finding{}, state: map[string]Condition{}}
}

// UniqueDefaults lists each owned type once, with the first owner's healthy
// default. The built-in checks take a shared type's default from
// pkg/finding's catalog, so for them the order does not matter; only a
// user's rule files could declare one type twice with different words.
func UniqueDefaults(owned []finding.ConditionDefault) []finding.ConditionDefault {
	var out []finding.ConditionDefault
	for _, d := range owned {
		if !slices.ContainsFunc(out, func(o finding.ConditionDefault) bool { return o.Type == d.Type }) {
			out = append(out, d)
		}
	}
	return out
}

// Start sets the state every owned type starts from and hands it to the
// sinks. found is what an earlier agent left (the Node's conditions, see
// FromNode), nil when there is none. A condition found True is kept, so that
// an agent restart does not make it flap, unless it turned True before
// bootTime: a reboot ends the kernel problems of the boot before it. Any
// other found state is kept too; an owned type not found starts at its
// healthy default. Call it once; what the checks reported before it is
// applied after it.
func (r *Reporter) Start(found []Condition, bootTime time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byType := map[string]Condition{}
	for _, c := range found {
		byType[c.Type] = c
	}
	now := r.now()
	r.stateMu.Lock()
	for _, d := range r.defaults {
		c, ok := byType[d.Type]
		stale := c.Status == finding.StatusTrue && c.Since.Before(bootTime)
		if !ok || stale {
			f := d.Healthy()
			f.Time = now
			c = Condition{Finding: f, Since: now}
		}
		r.state[d.Type] = c
	}
	r.started = true
	r.stateMu.Unlock()
	for _, s := range r.sinks {
		s.Start(r)
	}
	// What the checks found while the Node was being read, as if it had
	// come just after: their word wins over the state found on the Node.
	for _, f := range r.early {
		for _, s := range r.sinks {
			if !early(s) {
				s.Event(f)
			}
		}
	}
	if r.earlyDropped > 0 {
		r.log.Warn("events found before the Node could be read were over the limit kept; the metrics and the other sinks but the node's event spool miss them, this log has them",
			zap.Int("dropped", r.earlyDropped), zap.Int("kept", len(r.early)))
	}
	r.early, r.earlyDropped = nil, 0
	for _, d := range r.defaults {
		if sources := r.byCheck[d.Type]; len(sources) > 0 {
			r.apply(d.Type, merge(sources))
		}
	}
}

func (r *Reporter) passEvent(f finding.Finding) {
	for _, s := range r.sinks {
		s.Event(f)
	}
}

// Report takes one finding. A condition finding for a type no check owns is
// dropped: nodeguard never writes the kubelet's conditions.
func (r *Reporter) Report(f finding.Finding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.Kind != finding.KindCondition {
		r.stateMu.RLock()
		started := r.started
		r.stateMu.RUnlock()
		if !started {
			for _, s := range r.sinks {
				if early(s) {
					s.Event(f)
				}
			}
		}
		switch {
		case started:
			r.passEvent(f)
		case len(r.early) < maxEarlyEvents:
			r.early = append(r.early, f)
		default:
			// The early sinks (the node's spool) have it all the same.
			r.earlyDropped++
			r.log.Info("event found before the Node could be read, over the limit kept", zap.String("check", f.Check),
				zap.String("reason", f.Reason), zap.String("message", f.Message), zap.String("source", f.Source))
		}
		return
	}
	if !slices.ContainsFunc(r.defaults, func(d finding.ConditionDefault) bool { return d.Type == f.Type }) {
		r.log.Error("dropped a finding for a condition type no check owns",
			zap.String("check", f.Check), zap.String("condition", f.Type))
		return
	}
	sources := r.byCheck[f.Type]
	if sources == nil {
		sources = map[string]finding.Finding{}
		r.byCheck[f.Type] = sources
	}
	sources[f.Check] = f
	r.stateMu.RLock()
	started := r.started
	r.stateMu.RUnlock()
	if started {
		r.apply(f.Type, merge(sources))
	}
}

// apply makes merged the state of its type and tells the sinks, unless it
// changes nothing. r.mu is held.
func (r *Reporter) apply(condType string, merged finding.Finding) {
	r.stateMu.Lock()
	prev := r.state[condType]
	if sameState(prev.Finding, merged) {
		r.stateMu.Unlock()
		return
	}
	c := Condition{Finding: merged, Since: prev.Since}
	if prev.Status != merged.Status {
		c.Since = merged.Time
		if c.Since.IsZero() {
			c.Since = r.now()
		}
	}
	r.state[condType] = c
	r.stateMu.Unlock()
	for _, s := range r.sinks {
		s.Changed(c)
	}
}

// Conditions lists every owned type's state, in the order of the owners.
func (r *Reporter) Conditions() []Condition {
	r.stateMu.RLock()
	defer r.stateMu.RUnlock()
	out := make([]Condition, 0, len(r.defaults))
	for _, d := range r.defaults {
		if c, ok := r.state[d.Type]; ok {
			out = append(out, c)
		}
	}
	return out
}

// Condition returns one owned type's state.
func (r *Reporter) Condition(condType string) (Condition, bool) {
	r.stateMu.RLock()
	defer r.stateMu.RUnlock()
	c, ok := r.state[condType]
	return c, ok
}

// sameState says whether b changes nothing a reader of a condition sees.
// Messages compare as they are written: two that differ only past
// MaxMessageBytes are one state on the Node.
func sameState(a, b finding.Finding) bool {
	return a.Status == b.Status && a.Reason == b.Reason &&
		Truncate(a.Message, MaxMessageBytes) == Truncate(b.Message, MaxMessageBytes)
}

// merge makes one finding from each source's latest: True if any is True
// (their messages joined), else the most recent.
func merge(sources map[string]finding.Finding) finding.Finding {
	if len(sources) == 1 {
		for _, f := range sources {
			return f
		}
	}
	names := make([]string, 0, len(sources))
	for name := range sources {
		names = append(names, name)
	}
	sort.Strings(names)
	var (
		trues  []finding.Finding
		newest finding.Finding
	)
	for _, name := range names {
		f := sources[name]
		if f.Status == finding.StatusTrue {
			trues = append(trues, f)
		}
		if newest.Time.IsZero() || f.Time.After(newest.Time) {
			newest = f
		}
	}
	if len(trues) == 0 {
		return newest
	}
	out := trues[0]
	msgs := make([]string, len(trues))
	if len(trues) > 1 {
		// Each source's facts, under its check's name where two say one.
		out.Facts = nil
		for _, f := range trues {
			for k, v := range f.Facts {
				if out.Facts == nil {
					out.Facts = map[string]string{}
				}
				if _, taken := out.Facts[k]; taken {
					k = f.Check + " " + k
				}
				out.Facts[k] = v
			}
		}
	}
	for i, f := range trues {
		msgs[i] = f.Message
		if f.Time.After(out.Time) {
			out.Time = f.Time
		}
	}
	out.Message = strings.Join(msgs, "; ")
	return out
}
