package logrules

import (
	"strings"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// ReportQuiet ends a report that no line has followed for this long. The
// kernel prints a report's lines within milliseconds of each other; the
// margin is for a journal or syslog that passes them on in batches.
const ReportQuiet = 2 * time.Second

// maxReportLines ends a report after this many lines, for a log whose lines
// carry no time to end it by. An oops with its register dump, module list
// and stack is well under it.
const maxReportLines = 256

// maxFactsBytes is how much of a message a report's details may take: the
// first line keeps at least the rest of MaxMessageBytes.
const maxFactsBytes = finding.MaxMessageBytes / 2

// report is the multi-line report being read: what its first line made,
// held until the report ends, and the facts its later lines have told so
// far. It keeps no line, only what the rules' details took from them.
type report struct {
	open    bool
	started time.Time
	last    time.Time
	lines   int
	held    []heldFinding
}

type heldFinding struct {
	f    finding.Finding
	rule *compiled
	// facts holds, per detail of rule, the values found; nil until one is.
	facts [][]string
}

// ended reports whether a line at the given time can no longer belong to
// the report: it has been quiet for ReportQuiet, or has run GroupWindow.
func (r *report) ended(at time.Time) bool {
	return at.Sub(r.last) >= ReportQuiet || at.Sub(r.started) >= GroupWindow
}

// begin opens a report at l, holding found, which rules[i] made found[i].
func (r *report) begin(l Line, found []finding.Finding, rules []*compiled) {
	r.open, r.started, r.last, r.lines = true, l.Time, l.Time, 0
	for i, f := range found {
		r.held = append(r.held, heldFinding{f: f, rule: rules[i]})
	}
}

// observe takes the facts a later line of the report tells; h is what the
// line holds of the rule set's literals.
func (r *report) observe(l Line, lineHits hits) {
	r.lines++
	if l.Time.After(r.last) {
		r.last = l.Time
	}
	for i := range r.held {
		h := &r.held[i]
		for j := range h.rule.details {
			d := &h.rule.details[j]
			if h.facts != nil && len(h.facts[j]) >= max(d.Max, 1) {
				continue
			}
			if !d.pre.pass(lineHits) {
				continue
			}
			m := d.re.FindStringSubmatchIndex(l.Text)
			if m == nil || (d.exclude != nil && d.exclude.MatchString(l.Text)) {
				continue
			}
			v := strings.Join(strings.Fields(string(d.re.ExpandString(nil, d.Format, l.Text, m))), " ")
			if v == "" {
				continue
			}
			if h.facts == nil {
				h.facts = make([][]string, len(h.rule.details))
			}
			h.facts[j] = append(h.facts[j], v)
		}
	}
}

// end closes the report and appends its findings, each message now naming
// the facts found, to out.
func (r *report) end(out []finding.Finding) []finding.Finding {
	for i, h := range r.held {
		h.f.Message = summarize(h.f.Message, h.rule.details, h.facts)
		out = append(out, h.f)
		r.held[i] = heldFinding{}
	}
	r.held = r.held[:0]
	r.open = false
	return out
}

// summarize is first followed by "; LABEL value, value" for each detail
// found, in the rule's order, within MaxMessageBytes: the first line is cut
// before the facts are, since they are what it lacks.
func summarize(first string, details []compiledDetail, facts [][]string) string {
	if facts == nil {
		return first
	}
	var b strings.Builder
	for j, d := range details {
		if len(facts[j]) == 0 {
			continue
		}
		b.WriteString("; ")
		b.WriteString(d.Label)
		b.WriteByte(' ')
		b.WriteString(strings.Join(facts[j], ", "))
	}
	if b.Len() == 0 {
		return first
	}
	tail := finding.Truncate(b.String(), maxFactsBytes)
	// "detected stalls on CPUs/tasks:" introduces the lines the facts
	// come from, and "blocked for more than 120 seconds." would end the
	// sentence before them.
	first = strings.TrimRight(first, ":.")
	return finding.Truncate(first, finding.MaxMessageBytes-len(tail)) + tail
}
