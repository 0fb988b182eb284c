package logrules

import (
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestQuietStart(t *testing.T) {
	clearing := func(name, cond string, after time.Duration) Rule {
		return Rule{Name: name, Kind: finding.KindCondition, Condition: cond, Reason: "Bad", Contains: name, Pattern: name,
			ClearAfter: finding.Duration{Duration: after}}
	}
	permanent := Rule{Name: "for-good", Kind: finding.KindCondition, Condition: "ReadonlyFilesystem", Reason: "RO", Contains: "ro", Pattern: "ro"}
	specs := testConditions
	start := time.Unix(1_000_000, 0)
	spec := func(condType string) finding.ConditionDefault {
		for _, c := range specs {
			if c.Type == condType {
				return c
			}
		}
		t.Fatalf("no default for %s", condType)
		return finding.ConditionDefault{}
	}

	tests := []struct {
		name  string
		rules []Rule            // of all the check's engines
		said  []finding.Finding // through Wrap after start
		at    time.Duration     // Expire at start+at
		want  []string          // types cleared
	}{
		{"nothing said: cleared to the default once the quiet period is over",
			[]Rule{clearing("a", "KernelDeadlock", time.Minute)},
			nil, time.Minute, []string{"KernelDeadlock"}},
		{"not before",
			[]Rule{clearing("a", "KernelDeadlock", time.Minute)},
			nil, time.Minute - time.Nanosecond, nil},
		{"the longest clearAfter of the type's rules",
			[]Rule{clearing("a", "KernelDeadlock", time.Minute), clearing("b", "KernelDeadlock", time.Hour)},
			nil, 59 * time.Minute, nil},
		{"the check spoke of it: its engine clears it, not the start",
			[]Rule{clearing("a", "KernelDeadlock", time.Minute)},
			[]finding.Finding{finding.Condition("KernelDeadlock", finding.StatusTrue, "Bad", "x")}, time.Hour, nil},
		{"a sibling engine's True is not cleared by one that never matched",
			[]Rule{clearing("a", "KernelDeadlock", time.Minute), clearing("b", "KernelDeadlock", time.Minute)},
			[]finding.Finding{finding.Condition("KernelDeadlock", finding.StatusTrue, "Bad", "from b")}, time.Hour, nil},
		{"a type some rule sets for good is left alone",
			[]Rule{clearing("a", "ReadonlyFilesystem", time.Minute), permanent},
			nil, time.Hour, nil},
		{"events change nothing",
			[]Rule{clearing("a", "KernelDeadlock", time.Minute)},
			[]finding.Finding{finding.Event(finding.SeverityWarning, "TaskHung", "x")}, time.Minute, []string{"KernelDeadlock"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewQuietStart(start, tt.rules, specs)
			emit := q.Wrap(func(finding.Finding) {})
			for _, f := range tt.said {
				emit(f)
			}
			got := q.Expire(start.Add(tt.at), nil)
			if len(got) != len(tt.want) {
				t.Fatalf("Expire = %+v, want clears of %v", got, tt.want)
			}
			for i, f := range got {
				d := spec(tt.want[i])
				if f.Type != tt.want[i] || f.Status != finding.StatusFalse || f.Reason != d.Reason || f.Message != d.Message {
					t.Errorf("clear %+v, want %s False with the default %s %q", f, tt.want[i], d.Reason, d.Message)
				}
				if err := f.Validate(); err != nil {
					t.Error(err)
				}
			}
			if again := q.Expire(start.Add(tt.at+time.Hour), nil); len(tt.want) > 0 && len(again) != 0 {
				t.Errorf("cleared twice: %+v", again)
			}
		})
	}
}
