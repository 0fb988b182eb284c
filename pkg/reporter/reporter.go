// Package reporter is nodeguard's single writer. Checks hand it findings; it
// owns the state of the condition types the checks own, drops what changes
// nothing, and hands every sink the same snapshot and then the same changes:
// the API server, stdout, Prometheus, remediation.
package reporter

import (
	"fmt"
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
	// Conditions lists every owned type once, in the order of the owners,
	// then the aggregate types published (PublishAggregates).
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
	// aggregates are derived from the owned types' state (Aggregate),
	// each with only its owned sources.
	aggregates []finding.Aggregate

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
	for _, a := range r.aggregates {
		c := Condition{Finding: r.derive(a)}
		c.Finding.Time = now
		// The same status found on the Node keeps its transition time, so
		// that a restart does not restart a consumer's clock.
		if was, ok := byType[a.Type]; ok && was.Status == c.Status {
			c.Since = was.Since
		} else {
			c.Since = now
		}
		r.state[a.Type] = c
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
	changed := []Condition{c}
	for _, a := range r.aggregates {
		if !slices.ContainsFunc(a.Sources, func(d finding.ConditionDefault) bool { return d.Type == condType }) {
			continue
		}
		derived, was := r.derive(a), r.state[a.Type]
		if sameState(was.Finding, derived) {
			continue
		}
		derived.Time = c.Finding.Time
		ac := Condition{Finding: derived, Since: was.Since}
		if was.Status != derived.Status {
			ac.Since = c.Since
		}
		r.state[a.Type] = ac
		changed = append(changed, ac)
	}
	r.stateMu.Unlock()
	for _, ch := range changed {
		for _, s := range r.sinks {
			s.Changed(ch)
		}
	}
}

// PublishAggregates makes the reporter publish, besides the owned types,
// the aggregate types of OwnedAggregates, derived from their sources'
// state: sinks see them as any owned type. Call it before Start.
func (r *Reporter) PublishAggregates(aggs []finding.Aggregate) error {
	owned, err := OwnedAggregates(r.defaults, aggs)
	r.aggregates = owned
	return err
}

// OwnedAggregates lists each aggregate with at least one owned source,
// with only its owned sources: with none of them checked, True would claim
// health nobody looked at, so the type is not published at all. It
// refuses an aggregate type that a check owns too, which would be two
// states of one type.
func OwnedAggregates(owned []finding.ConditionDefault, aggs []finding.Aggregate) ([]finding.Aggregate, error) {
	isOwned := func(t string) bool {
		return slices.ContainsFunc(owned, func(d finding.ConditionDefault) bool { return d.Type == t })
	}
	var out []finding.Aggregate
	for _, a := range aggs {
		if isOwned(a.Type) {
			return nil, fmt.Errorf("condition type %s is owned by a check and is an aggregate condition too; rename the check's type or turn reporter.aggregateConditions off", a.Type)
		}
		var sources []finding.ConditionDefault
		for _, src := range a.Sources {
			if isOwned(src.Type) {
				sources = append(sources, src)
			}
		}
		if len(sources) > 0 {
			a.Sources = sources
			out = append(out, a)
		}
	}
	return out, nil
}

// Aggregates lists the aggregate types published, with their owned
// sources.
func (r *Reporter) Aggregates() []finding.Aggregate { return slices.Clone(r.aggregates) }

// derive is an aggregate's state from its sources': False naming every
// source that is True, else Unknown naming those that are Unknown, else
// its healthy state. r.stateMu is held.
func (r *Reporter) derive(a finding.Aggregate) finding.Finding {
	var bad, unknown []finding.Finding
	for _, src := range a.Sources {
		c, ok := r.state[src.Type]
		switch {
		case !ok:
		case c.Status == finding.StatusTrue:
			bad = append(bad, c.Finding)
		case c.Status == finding.StatusUnknown:
			unknown = append(unknown, c.Finding)
		}
	}
	naming := func(status finding.Status, of []finding.Finding) finding.Finding {
		msgs := make([]string, len(of))
		for i, f := range of {
			msgs[i] = f.Type + ": " + f.Message
		}
		return finding.Condition(a.Type, status, of[0].Type, strings.Join(msgs, "; "))
	}
	var f finding.Finding
	switch {
	case len(bad) > 0:
		f = naming(finding.StatusFalse, bad)
	case len(unknown) > 0:
		f = naming(finding.StatusUnknown, unknown)
	default:
		names := make([]string, len(a.Sources))
		for i, src := range a.Sources {
			names[i] = src.Type
		}
		verb := " is False"
		if len(names) > 1 {
			verb = " are False"
		}
		f = finding.Condition(a.Type, finding.StatusTrue, a.Reason, healthyAggregatePrefix+strings.Join(names, ", ")+verb)
	}
	f.Check = AggregateCheck
	return f
}

// healthyAggregatePrefix begins a healthy aggregate's message, and
// "TYPE: " an unhealthy one's: words no other writer of these types uses,
// by which ForeignWriter knows nodeguard's own where managedFields do not
// say.
const healthyAggregatePrefix = "nodeguard's "

// AggregateCheck is the Check of an aggregate condition's finding: the
// reporter's, not a check's.
const AggregateCheck = "aggregate"

// Conditions lists every owned type's state, in the order of the owners,
// then the aggregates'.
func (r *Reporter) Conditions() []Condition {
	r.stateMu.RLock()
	defer r.stateMu.RUnlock()
	out := make([]Condition, 0, len(r.defaults)+len(r.aggregates))
	for _, d := range r.defaults {
		if c, ok := r.state[d.Type]; ok {
			out = append(out, c)
		}
	}
	for _, a := range r.aggregates {
		if c, ok := r.state[a.Type]; ok {
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
