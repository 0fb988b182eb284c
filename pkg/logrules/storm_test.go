package logrules

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestStorms(t *testing.T) {
	const (
		full = "nf_conntrack: table full, dropping packet"
		nic  = "acme_nic eth2: rx ring error"
	)
	rules := []Rule{
		event("conntrack", "ConntrackFull", "table full", `table full, dropping packet`),
		event("nic", "NICError", "ring error", `ring error`),
		{Name: "full-cond", Kind: finding.KindCondition, Condition: "ConntrackExhausted", Reason: "TableFull",
			Contains: "table full", Pattern: `table full`, ClearAfter: finding.Duration{Duration: time.Hour}},
	}
	conds := []finding.ConditionDefault{{Type: "ConntrackExhausted", Reason: "Fine", Message: "fine"}}
	type step struct {
		d      time.Duration
		line   string // "" for Expire at d
		flush  bool
		expect []string
	}
	sec := time.Second
	tests := []struct {
		name  string
		steps []step
	}{
		{"a storm is its first line's event, then one summary", []step{
			{0, full, false, []string{"ConntrackFull", "ConntrackExhausted=True"}},
			{sec, full, false, []string{"ConntrackExhausted=True"}},
			{2 * sec, full, false, []string{"ConntrackExhausted=True"}},
			{3 * sec, "", true, []string{"ConntrackFull x2 from 1970-01-01T00:16:40Z to 1970-01-01T00:16:42Z"}},
		}},
		{"the window ends at the next identical line", []step{
			{0, full, false, []string{"ConntrackFull", "ConntrackExhausted=True"}},
			{sec, full, false, []string{"ConntrackExhausted=True"}},
			{DefaultDedupWindow, full, false, []string{"ConntrackFull x1 from 1970-01-01T00:16:40Z to 1970-01-01T00:16:41Z", "ConntrackFull", "ConntrackExhausted=True"}},
			{DefaultDedupWindow + sec, "", true, nil},
		}},
		{"the window ends at Expire", []step{
			{0, nic, false, []string{"NICError"}},
			{sec, nic, false, nil},
			{DefaultDedupWindow - sec, "", false, nil},
			{DefaultDedupWindow, "", false, []string{"NICError x1 from 1970-01-01T00:16:40Z to 1970-01-01T00:16:41Z"}},
			{DefaultDedupWindow + sec, nic, false, []string{"NICError"}},
		}},
		{"interleaved storms are each their own", []step{
			{0, nic, false, []string{"NICError"}},
			{1, full, false, []string{"ConntrackFull", "ConntrackExhausted=True"}},
			{2, nic, false, nil},
			{3, full, false, []string{"ConntrackExhausted=True"}},
			{4, nic, false, nil},
			{5, "", true, []string{"NICError x2 from 1970-01-01T00:16:40Z to 1970-01-01T00:16:40.000000004Z", "ConntrackFull x1 from 1970-01-01T00:16:40.000000001Z to 1970-01-01T00:16:40.000000003Z"}},
		}},
		{"a line that differs is no repeat", []step{
			{0, nic, false, []string{"NICError"}},
			{sec, nic + " ", false, []string{"NICError"}},
			{2 * sec, "", true, nil},
		}},
	}
	t0 := time.Unix(1000, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngineWith(t, rules, conds)
			for i, s := range tt.steps {
				at := t0.Add(s.d)
				var out []finding.Finding
				if s.line != "" {
					out = e.Feed(Line{Text: s.line, Time: at}, nil)
				} else {
					out = e.Expire(at, nil)
				}
				if s.flush {
					out = e.Flush(out)
				}
				if got := describeStorm(out); strings.Join(got, "|") != strings.Join(s.expect, "|") {
					t.Errorf("step %d: got %q, want %q", i, got, s.expect)
				}
			}
		})
	}
}

// describeStorm names each finding, a summary by its count and times.
func describeStorm(fs []finding.Finding) []string {
	var out []string
	for _, f := range fs {
		switch {
		case f.Kind == finding.KindCondition:
			out = append(out, f.Type+"="+string(f.Status))
		case f.Count > 0:
			_, times, _ := strings.Cut(f.Message, ", identical, ")
			out = append(out, fmt.Sprintf("%s x%d %s", f.Reason, f.Count, times))
		default:
			out = append(out, f.Reason)
		}
	}
	return out
}

// TestStormsAreBounded: past maxStorms distinct lines, a line is reported
// as any other, repeats and all.
func TestStormsAreBounded(t *testing.T) {
	e := newEngineWith(t, []Rule{event("nic", "NICError", "ring error", `ring error`)}, nil)
	t0 := time.Unix(1000, 0)
	for i := range maxStorms {
		e.Feed(Line{Text: fmt.Sprintf("eth%d: ring error", i), Time: t0}, nil)
	}
	extra := "eth999: ring error"
	n := 0
	for range 3 {
		n += len(e.Feed(Line{Text: extra, Time: t0}, nil))
	}
	if n != 3 {
		t.Errorf("a line past the bound made %d events of 3", n)
	}
	if len(e.storms) != maxStorms {
		t.Errorf("%d storms followed, want %d", len(e.storms), maxStorms)
	}
}

func newEngineWith(t *testing.T, rules []Rule, conds []finding.ConditionDefault) *Engine {
	t.Helper()
	e, err := NewEngine(rules, conds)
	if err != nil {
		t.Fatal(err)
	}
	// As the kmsg check sets it; an engine has no window of its own.
	e.SetDedupWindow(DefaultDedupWindow)
	return e
}

func TestDedupWindowOff(t *testing.T) {
	e := newEngineWith(t, []Rule{event("nic", "NICError", "ring error", `ring error`)}, nil)
	e.SetDedupWindow(0)
	n := 0
	for i := range 5 {
		n += len(e.Feed(Line{Text: "eth0: ring error", Time: time.Unix(int64(i), 0)}, nil))
	}
	if n += len(e.Flush(nil)); n != 5 {
		t.Errorf("with the window off, 5 identical lines made %d events", n)
	}
}
