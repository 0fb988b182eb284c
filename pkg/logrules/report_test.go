package logrules

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// reportRules are a widget driver's report: a first line, then the lines
// that tell which widget and where.
func reportRules() []Rule {
	return []Rule{
		{Name: "jam", Kind: finding.KindEvent, Reason: "WidgetJam", Contains: "widget jam", Pattern: `widget jam on bus \d+`,
			Details: []Detail{
				{Label: "widget", Contains: "serial=", Pattern: `serial=(\w+)`},
				{Label: "frames", Pattern: `^ +(\w+)\+0x`, Exclude: `^ +idle\+`, Max: 2},
			}},
		{Name: "jam-condition", Kind: finding.KindCondition, Condition: "WidgetsJammed", Reason: "WidgetJam",
			Contains: "widget jam", Pattern: `widget jam`},
		{Name: "smoke", Kind: finding.KindEvent, Reason: "Smoke", Contains: "smoke", Pattern: `smoke`},
	}
}

type timedLine struct {
	d    time.Duration
	text string
}

func TestReportSummary(t *testing.T) {
	jam := timedLine{0, "widget jam on bus 3"}
	tests := []struct {
		name  string
		lines []timedLine
		flush bool
		// want is each finding's reason and message, in the order out.
		want []string
	}{
		{
			name: "facts in the rule's order, the line's condition with it",
			lines: []timedLine{jam, {1, " idle+0x1"}, {2, " spin+0x2"}, {3, " wait+0x3"}, {4, " more+0x4"},
				{5, "dev serial=AB12"}, {6, "---[ end trace ]---"}},
			want: []string{"WidgetJam: widget jam on bus 3; widget AB12; frames spin, wait", "WidgetJam: widget jam on bus 3"},
		},
		{
			name:  "an unrelated finding goes out at once, the report after",
			lines: []timedLine{jam, {1, "smoke"}, {2, "serial=X"}, {3, "---[ end ]---"}},
			want:  []string{"Smoke: smoke", "WidgetJam: widget jam on bus 3; widget X", "WidgetJam: widget jam on bus 3"},
		},
		{
			name:  "the next report ends the one before",
			lines: []timedLine{jam, {1, "serial=A"}, {2, "widget jam on bus 4"}, {3, "serial=B"}},
			flush: true,
			want: []string{"WidgetJam: widget jam on bus 3; widget A", "WidgetJam: widget jam on bus 3",
				"WidgetJam: widget jam on bus 4; widget B", "WidgetJam: widget jam on bus 4"},
		},
		{
			name:  "a quiet gap ends it, and a later line is no part of it",
			lines: []timedLine{jam, {ReportQuiet, "serial=late"}},
			want:  []string{"WidgetJam: widget jam on bus 3", "WidgetJam: widget jam on bus 3"},
		},
		{
			name:  "held until flushed",
			lines: []timedLine{jam, {1, "serial=Z"}},
			flush: true,
			want:  []string{"WidgetJam: widget jam on bus 3; widget Z", "WidgetJam: widget jam on bus 3"},
		},
		{name: "held, not lost, and not yet out", lines: []timedLine{jam, {1, "serial=Z"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEngine(reportRules(), []finding.ConditionDefault{{Type: "WidgetsJammed", Reason: "Fine", Message: "fine"}})
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Unix(1000, 0)
			var out []finding.Finding
			for _, l := range tt.lines {
				out = e.Feed(Line{Text: l.text, Time: t0.Add(l.d)}, out)
			}
			if tt.flush {
				out = e.Flush(out)
			}
			var got []string
			for _, f := range out {
				got = append(got, f.Reason+": "+f.Message)
				if !f.Time.Equal(t0) && f.Reason == "WidgetJam" && strings.Contains(f.Message, "bus 3") {
					t.Errorf("finding %q has time %v, want its first line's %v", f.Message, f.Time, t0)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
			if e.InReport() != (len(tt.want) == 0) {
				t.Errorf("InReport = %v after the lines", e.InReport())
			}
		})
	}
}

// TestReportEnds: a report that never prints its end still ends, by log
// time at Expire or by length in a log without times.
func TestReportEnds(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		run  func(e *Engine) []finding.Finding
	}{
		{"Expire after the quiet", func(e *Engine) []finding.Finding {
			e.Feed(Line{Text: "widget jam on bus 1", Time: t0}, nil)
			if out := e.Expire(t0.Add(ReportQuiet/2), nil); len(out) != 0 {
				return nil
			}
			return e.Expire(t0.Add(ReportQuiet), nil)
		}},
		{"lines without time", func(e *Engine) []finding.Finding {
			out := e.Feed(Line{Text: "widget jam on bus 1"}, nil)
			for range maxReportLines {
				out = e.Feed(Line{Text: "chatter"}, out)
			}
			return out
		}},
		{"a report running on past GroupWindow", func(e *Engine) []finding.Finding {
			out := e.Feed(Line{Text: "widget jam on bus 1", Time: t0}, nil)
			for d := time.Duration(0); d <= GroupWindow; d += time.Second {
				out = e.Feed(Line{Text: "chatter", Time: t0.Add(d)}, out)
			}
			return out
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEngine(reportRules()[:1], nil)
			if err != nil {
				t.Fatal(err)
			}
			if out := tt.run(e); len(out) != 1 || out[0].Reason != "WidgetJam" {
				t.Errorf("got %+v, want the one WidgetJam", out)
			}
		})
	}
}

func TestReportMessageWithinLimit(t *testing.T) {
	rules := []Rule{{Name: "r", Kind: finding.KindEvent, Reason: "R", Contains: "begin", Pattern: `begin`,
		Details: []Detail{{Label: "fact", Pattern: `fact (.*)`, Max: maxDetailValues}}}}
	e, err := NewEngine(rules, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := e.Feed(Line{Text: "begin " + strings.Repeat("x", 2000)}, nil)
	for range maxDetailValues {
		out = e.Feed(Line{Text: "fact " + strings.Repeat("y", 100)}, out)
	}
	out = e.Flush(out)
	if len(out) != 1 {
		t.Fatalf("got %d findings", len(out))
	}
	m := out[0].Message
	if len(m) > finding.MaxMessageBytes || !strings.HasPrefix(m, "begin xxx") || !strings.Contains(m, "; fact yyy") {
		t.Errorf("message of %d bytes, want at most %d holding the first line's start and the facts: %q", len(m), finding.MaxMessageBytes, m)
	}
}

func TestDetailErrors(t *testing.T) {
	tests := []struct {
		detail Detail
		field  string
	}{
		{Detail{Pattern: `(x)`}, "details[0].label"},
		{Detail{Label: "l"}, "details[0].pattern"},
		{Detail{Label: "l", Pattern: `(`}, "details[0].pattern"},
		{Detail{Label: "l", Pattern: `x`}, "details[0].pattern"},
		{Detail{Label: "l", Pattern: `(x)`, Exclude: `(`}, "details[0].exclude"},
		{Detail{Label: "l", Pattern: `(x)`, Max: maxDetailValues + 1}, "details[0].max"},
	}
	for _, tt := range tests {
		r := Rule{Name: "r", Kind: finding.KindEvent, Reason: "R", Pattern: "r", Details: []Detail{tt.detail}}
		_, err := NewEngine([]Rule{r}, nil)
		var re *RuleError
		if !errors.As(err, &re) || re.Field != tt.field {
			t.Errorf("detail %+v: error %v, want one for field %s", tt.detail, err, tt.field)
		}
	}
}
