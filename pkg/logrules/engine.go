package logrules

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// GroupWindow is how long, in log time, one multi-line report may run: an
// oops prints its lines within milliseconds, so matches of the same group
// this close together belong to one report.
const GroupWindow = 10 * time.Second

// endOfReport marks the last line of an oops or panic report.
const endOfReport = "---[ end "

// Engine runs rules over lines, one line at a time, keeping only the small
// state that multi-line reports need (no look-back buffer): the time each
// group last matched, the OOM kill being reported, the report being read,
// match counts for rules that need several, and the conditions that clear
// after a quiet period. It is not safe for concurrent use.
//
// A match of a rule with details begins a report: what its line made is
// held, the lines after it are searched for the details alone, and the
// findings go out, once, when the report ends: at a `---[ end` line, when
// the next report begins, after ReportQuiet without a line or GroupWindow
// in all (on the next line, or at Expire), or at Flush.
type Engine struct {
	rules      []*compiled
	conditions []finding.ConditionDefault
	scan       *scanner
	// hits is what the line being fed holds of scan's literals, and cands
	// the rules whose prefilter it may pass.
	hits      hits
	cands     []uint64
	groupSeen map[string]time.Time
	counts    map[string][]time.Time
	// active holds, for condition rules that clear, when each last matched.
	active map[string]activeCondition
	oom    oomContext
	rep    report
	// made is the rule of each finding the line being fed has made so far,
	// and lineFound a copy of those findings while a report begins.
	made      []*compiled
	lineFound []finding.Finding
	// storms are the runs of identical problem lines being counted, by
	// their text, each for dedupWindow.
	storms      map[string]*storm
	dedupWindow time.Duration
	// due is, when dueKnown, a time before which no storm ends and no
	// condition clears; it may be earlier than the first that does.
	due      time.Time
	dueKnown bool
}

type activeCondition struct {
	last       time.Time
	clearAfter time.Duration
}

// RuleSet is rules compiled once, for as many engines as a check runs (one
// per source or unit): compiling the patterns is the costly part, and a
// compiled set is only read, so engines on different goroutines may share
// one. An Engine's own state is not shared.
type RuleSet struct {
	source     []Rule
	rules      []*compiled
	conditions []finding.ConditionDefault
	scan       *scanner
}

// scanner is the one pass a line gets: every literal of every rule, their
// details and the engine's own markers, found by one matcher.
type scanner struct {
	m *matcher
	// byLit lists, per literal, the rules (a bit each) whose first
	// prefilter group holds it; always, the rules without a prefilter.
	byLit     [][]uint64
	always    []uint64
	alwaysAny bool
	// The engine's own literals.
	endMark, oom, task, memUsage int32
}

// newScanner builds the matcher over the rules' literals and sets their
// prefilters.
func newScanner(rules []*compiled) *scanner {
	var lits literals
	s := &scanner{
		endMark:  lits.add(literal{text: endOfReport}),
		oom:      lits.add(literal{text: "oom"}),
		task:     lits.add(literal{text: "Task"}),
		memUsage: lits.add(literal{text: oomUsage}),
	}
	for _, r := range rules {
		r.pre = prefilterOf(&lits, r.Contains, r.derived)
		for i := range r.branches {
			b := &r.branches[i]
			b.pre = prefilterOf(&lits, "", b.derived)
		}
		for i := range r.details {
			d := &r.details[i]
			d.pre = prefilterOf(&lits, d.Contains, d.derived)
		}
	}
	words := (len(rules) + 63) / 64
	s.byLit = make([][]uint64, len(lits.list))
	s.always = make([]uint64, words)
	for i, r := range rules {
		if len(r.pre) == 0 {
			s.always[i>>6] |= 1 << (uint(i) & 63)
			s.alwaysAny = true
			continue
		}
		for _, l := range r.pre[0] {
			if s.byLit[l] == nil {
				s.byLit[l] = make([]uint64, words)
			}
			s.byLit[l][i>>6] |= 1 << (uint(i) & 63)
		}
	}
	s.m = newMatcher(lits.list)
	return s
}

// Compile checks and compiles rules; the first bad rule is returned as a
// *RuleError.
func Compile(rules []Rule, conditions []finding.ConditionDefault) (*RuleSet, error) {
	s := &RuleSet{source: slices.Clone(rules), conditions: slices.Clone(conditions)}
	known := map[string]bool{}
	for _, c := range conditions {
		known[c.Type] = true
	}
	for i, r := range rules {
		c, err := compile(i, r)
		if err != nil {
			return nil, err
		}
		if r.Kind == finding.KindCondition && !known[r.Condition] {
			return nil, &RuleError{Index: i, Name: r.Name, Field: "condition", Value: r.Condition,
				Err: "no condition of that type is declared; add it under conditions"}
		}
		s.rules = append(s.rules, c)
	}
	s.scan = newScanner(s.rules)
	return s, nil
}

// Engine returns a fresh engine over the set: no report in progress, no
// counts, no active conditions.
func (s *RuleSet) Engine() *Engine {
	return &Engine{
		rules:      s.rules,
		conditions: s.conditions,
		scan:       s.scan,
		hits:       make(hits, (len(s.scan.m.lits)+63)/64),
		cands:      make([]uint64, len(s.scan.always)),
		groupSeen:  map[string]time.Time{},
		counts:     map[string][]time.Time{},
		active:     map[string]activeCondition{},
		storms:     map[string]*storm{},
	}
}

// Rules returns the rules as given to Compile, for what looks at rules
// rather than runs them (NewQuietStart).
func (s *RuleSet) Rules() []Rule { return slices.Clone(s.source) }

// Conditions returns the condition types the set's rules own, with their
// healthy defaults.
func (s *RuleSet) Conditions() []finding.ConditionDefault { return slices.Clone(s.conditions) }

// NewEngine compiles rules for one engine; the first bad rule is returned as
// a *RuleError. A check that runs several engines over the same rules
// compiles them once with Compile instead.
func NewEngine(rules []Rule, conditions []finding.ConditionDefault) (*Engine, error) {
	s, err := Compile(rules, conditions)
	if err != nil {
		return nil, err
	}
	return s.Engine(), nil
}

// Conditions returns the condition types the engine's rules own, with their
// healthy defaults.
func (e *Engine) Conditions() []finding.ConditionDefault {
	return append([]finding.ConditionDefault(nil), e.conditions...)
}

// Feed runs every rule over one line and appends what it finds to out. The
// line is read once, for the literals of all rules at once; a rule's
// pattern runs only on a line that holds its literals, and a line that
// holds none costs that one pass and allocates nothing. Feed keeps nothing
// of l's text: what its findings and state hold of it is copied, so that a
// reader may hand it lines cut from a buffer it then reuses.
func (e *Engine) Feed(l Line, out []finding.Finding) []finding.Finding {
	text := l.Text
	if e.rep.open && e.rep.ended(l.Time) {
		out = e.rep.end(out)
	}
	h := e.hits
	clear(h)
	e.scan.m.scan(text, h)
	endMark := h.has(e.scan.endMark)
	if endMark {
		clear(e.groupSeen)
	}
	e.oom.observe(text, l.Time, h.has(e.scan.oom) || h.has(e.scan.task), h.has(e.scan.memUsage))
	start := len(out)
	if e.candidates(h) {
		out = e.runRules(l, h, out, start)
	}
	began := false
	if len(out) > start {
		if out, began = e.beginReport(l, out, start); !began {
			out = e.dedup(l, out, start)
		}
		e.made = e.made[:0]
	}
	if e.rep.open {
		if !began {
			e.rep.observe(l, h)
		}
		if endMark || e.rep.lines >= maxReportLines {
			out = e.rep.end(out)
		}
	}
	return out
}

// candidates sets in e.cands, in the rules' order, each rule whose
// prefilter's first group the line's hits touch, and each rule without a
// prefilter, and reports whether it set any.
func (e *Engine) candidates(h hits) bool {
	copy(e.cands, e.scan.always)
	some := e.scan.alwaysAny
	for w, word := range h {
		for word != 0 {
			l := w<<6 | bits.TrailingZeros64(word)
			word &= word - 1
			if rules := e.scan.byLit[l]; rules != nil {
				some = true
				for i := range e.cands {
					e.cands[i] |= rules[i]
				}
			}
		}
	}
	return some
}

// runRules runs, on the line, each rule that candidates set, appending
// what they make to out; start is where this line's findings begin.
func (e *Engine) runRules(l Line, h hits, out []finding.Finding, start int) []finding.Finding {
	text := l.Text
	for w, word := range e.cands {
		for word != 0 {
			r := e.rules[w<<6|bits.TrailingZeros64(word)]
			word &= word - 1
			if !r.pre.pass(h) || !r.matches(text, h) {
				continue
			}
			if r.exclude != nil && r.exclude.MatchString(text) {
				continue
			}
			if r.Attribute == "oom" && e.oom.repeat(text, l.Time) {
				continue
			}
			if r.Group != "" {
				// The first match of a group speaks for the whole report, other
				// rules of the group on the same line included.
				seen, ok := e.groupSeen[r.Group]
				e.groupSeen[r.Group] = l.Time
				if ok && l.Time.Sub(seen) < GroupWindow && !l.Time.Before(seen) {
					continue
				}
			}
			if r.MinCount > 1 && !e.countReached(r, l.Time) {
				continue
			}
			if sameProblem(out[start:], r) {
				continue
			}
			out = append(out, e.finding(r, l))
			e.made = append(e.made, r)
		}
	}
	return out
}

// beginReport holds what this line made, out[start:], when one of its rules
// has details: the report open until now ends first, and its findings take
// the place of this line's in out.
func (e *Engine) beginReport(l Line, out []finding.Finding, start int) ([]finding.Finding, bool) {
	if !slices.ContainsFunc(e.made, func(r *compiled) bool { return len(r.details) > 0 }) {
		return out, false
	}
	// The whole line waits, not only the finding with details, so that
	// what one line made still goes out together and in its order.
	e.lineFound = append(e.lineFound[:0], out[start:]...)
	out = out[:start]
	if e.rep.open {
		out = e.rep.end(out)
	}
	e.rep.begin(l, e.lineFound, e.made)
	clear(e.lineFound)
	return out, true
}

// InReport reports whether a report is open, its findings held.
func (e *Engine) InReport() bool { return e.rep.open }

// Flush ends the open report, if any, and appends its findings to out: for
// the end of a replayed log, or a source that has gone quiet.
func (e *Engine) Flush(out []finding.Finding) []finding.Finding {
	if e.rep.open {
		out = e.rep.end(out)
	}
	return e.endStorms(time.Time{}, out)
}

// sameProblem reports whether this line already made an event with r's
// reason, or set r's condition type: a line is one problem per reason and
// one state per condition, however many rules (built-in, user, NPD) describe
// it. The first rule wins.
func sameProblem(found []finding.Finding, r *compiled) bool {
	for _, f := range found {
		if f.Kind != r.Kind {
			continue
		}
		if (r.Kind == finding.KindEvent && f.Reason == r.Reason) || (r.Kind == finding.KindCondition && f.Type == r.Condition) {
			return true
		}
	}
	return false
}

// countReached records a match and says whether MinCount matches fell within
// Window; when they did the count starts over.
func (e *Engine) countReached(r *compiled, at time.Time) bool {
	times := e.counts[r.Name]
	keep := times[:0]
	for _, t := range times {
		if at.Sub(t) < r.Window.Duration {
			keep = append(keep, t)
		}
	}
	keep = append(keep, at)
	if len(keep) >= r.MinCount {
		e.counts[r.Name] = keep[:0]
		return true
	}
	e.counts[r.Name] = keep
	return false
}

func (e *Engine) finding(r *compiled, l Line) finding.Finding {
	// A copy: the line's text may be a reader's buffer, and the finding
	// outlives the line.
	msg, podUID, containerID := strings.Clone(strings.TrimSpace(l.Text)), "", ""
	if r.Attribute == "oom" {
		msg, podUID, containerID = e.oom.describe(msg, l.Time)
	}
	f := finding.Finding{
		Kind:        r.Kind,
		Reason:      r.Reason,
		Message:     msg,
		Severity:    finding.SeverityWarning,
		Time:        l.Time,
		Source:      l.where(),
		PodUID:      podUID,
		ContainerID: containerID,
	}
	if r.Kind == finding.KindCondition {
		f.Type = r.Condition
		f.Status = finding.StatusTrue
		f.Severity = ""
		if r.ClearAfter.Duration > 0 {
			e.active[r.Condition] = activeCondition{last: l.Time, clearAfter: r.ClearAfter.Duration}
			e.noteDue(l.Time.Add(r.ClearAfter.Duration))
		}
	}
	return f
}

// Pending reports whether Expire has anything left to do: an open report,
// a storm being counted, or a condition waiting out its quiet period. A
// source whose engine has nothing pending need not call Expire at all.
func (e *Engine) Pending() bool {
	return e.rep.open || len(e.storms) > 0 || len(e.active) > 0
}

// Expire ends the open report if it has been quiet for ReportQuiet by now,
// and sets False each condition whose quiet period has passed.
func (e *Engine) Expire(now time.Time, out []finding.Finding) []finding.Finding {
	if e.rep.open && e.rep.ended(now) {
		out = e.rep.end(out)
	}
	if e.dueKnown && now.Before(e.due) {
		// Replay expires at every line: most have nothing due.
		return out
	}
	out = e.endStorms(now, out)
	defer e.setDue()
	for condType, a := range e.active {
		if now.Sub(a.last) < a.clearAfter {
			continue
		}
		delete(e.active, condType)
		for _, c := range e.conditions {
			if c.Type == condType {
				out = append(out, finding.Finding{
					Kind: finding.KindCondition, Type: condType, Status: finding.StatusFalse,
					Reason: c.Reason, Message: fmt.Sprintf("%s; no match for %s", c.Message, a.clearAfter), Time: now,
				})
			}
		}
	}
	return out
}

// farFuture is due when nothing is: later than any log's time.
var farFuture = time.Unix(1<<40, 0)

// setDue finds when the first storm ends or condition clears.
func (e *Engine) setDue() {
	e.due, e.dueKnown = farFuture, true
	for _, s := range e.storms {
		e.noteDue(s.first.Add(e.dedupWindow))
	}
	for _, a := range e.active {
		e.noteDue(a.last.Add(a.clearAfter))
	}
}

// noteDue records that something ends or clears at t.
func (e *Engine) noteDue(t time.Time) {
	if e.dueKnown && t.Before(e.due) {
		e.due = t
	}
}
