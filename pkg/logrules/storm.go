package logrules

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// DefaultDedupWindow is the kmsg check's window (checks.kmsg.dedupWindow)
// in which identical lines are one storm; an engine has none until told
// (SetDedupWindow), so that a service's log, whose lines repeat once per
// attempt (the kubelet's "Failed to update lease" each renewal), is an
// event per line that the Node's event counts. A driver that prints the same
// error ten thousand times, or a conntrack table that stays full, makes its
// events on the storm's first line, and one event more, the storm's
// summary, with the count of the lines it stood for and their first and
// last time, when the window ends: that long after the first line, at the
// next identical line or at Expire, whichever comes first; or at Flush. An
// identical line after that begins a new storm.
const DefaultDedupWindow = 5 * time.Minute

// maxStorms bounds the storms followed at once; a line that would begin
// one more is reported as any other.
const maxStorms = 64

// storm is a run of identical lines (the same text, the time aside) whose
// first made events.
type storm struct {
	first, last time.Time
	// lastLine names the last line (where it was, not what it said).
	lastLine Line
	repeats  int
	// events are what the first line made, for the summary.
	events []finding.Finding
}

// dedup handles the findings a line made, out[start:], that began no
// report: a repeat of a storm's line makes no event (its conditions pass,
// since they say a state, not a count), and other lines may begin a storm.
func (e *Engine) dedup(l Line, out []finding.Finding, start int) []finding.Finding {
	if e.dedupWindow <= 0 {
		return out
	}
	s, ok := e.storms[l.Text]
	if ok && l.Time.Sub(s.first) < e.dedupWindow && !l.Time.Before(s.first) {
		s.repeats++
		s.last, s.lastLine = l.Time, Line{Source: l.Source, Number: l.Number}
		keep := out[:start]
		for _, f := range out[start:] {
			if f.Kind != finding.KindEvent {
				keep = append(keep, f)
			}
		}
		return keep
	}
	if ok {
		// The window is over: the summary goes before this line's events,
		// which begin the next storm.
		e.lineFound = append(e.lineFound[:0], out[start:]...)
		out = s.summary(out[:start])
		start = len(out)
		out = append(out, e.lineFound...)
		clear(e.lineFound)
		delete(e.storms, l.Text)
	}
	if len(e.storms) >= maxStorms {
		return out
	}
	var events []finding.Finding
	for _, f := range out[start:] {
		if f.Kind == finding.KindEvent {
			events = append(events, f)
		}
	}
	if len(events) > 0 {
		// The key outlives the line: a reader may reuse its text.
		e.storms[strings.Clone(l.Text)] = &storm{first: l.Time, last: l.Time,
			lastLine: Line{Source: l.Source, Number: l.Number}, events: events}
		e.noteDue(l.Time.Add(e.dedupWindow))
	}
	return out
}

// summary appends, for each event of the storm's first line, one that
// stands for its repeats; none when there were none.
func (s *storm) summary(out []finding.Finding) []finding.Finding {
	if s.repeats == 0 {
		return out
	}
	for _, f := range s.events {
		f.Message += fmt.Sprintf("; %d more times, identical, from %s to %s", s.repeats,
			s.first.UTC().Format(time.RFC3339Nano), s.last.UTC().Format(time.RFC3339Nano))
		f.Time, f.Source, f.Count = s.last, s.lastLine.where(), s.repeats
		out = append(out, f)
	}
	return out
}

// endStorms appends the summaries of the storms whose window is over by
// now, or of all when now is zero, and forgets them.
func (e *Engine) endStorms(now time.Time, out []finding.Finding) []finding.Finding {
	if len(e.storms) == 0 {
		return out
	}
	var ended []string
	for text, s := range e.storms {
		if now.IsZero() || now.Sub(s.first) >= e.dedupWindow {
			ended = append(ended, text)
		}
	}
	// In the order they began, not the map's.
	slices.SortFunc(ended, func(a, b string) int { return e.storms[a].first.Compare(e.storms[b].first) })
	for _, text := range ended {
		out = e.storms[text].summary(out)
		delete(e.storms, text)
	}
	return out
}

// SetDedupWindow sets how long identical lines are one storm; zero or less,
// the default, reports every line. A storm being counted keeps the window it began with
// only until the next line or Expire judges it by the new one.
func (e *Engine) SetDedupWindow(d time.Duration) { e.dedupWindow, e.dueKnown = d, false }
