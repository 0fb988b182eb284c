package logrules

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Engines made from one RuleSet keep their own state: a count or a report
// in progress in one says nothing about a line fed to another, as the
// engines of a check's several sources must not.
func TestEnginesOfOneRuleSetKeepTheirOwnState(t *testing.T) {
	counted := event("twice", "Twice", "flap", `flap`)
	counted.MinCount, counted.Window = 2, finding.Duration{Duration: time.Minute}
	grouped := event("oops", "Oops", "Oops:", `Oops:`)
	grouped.Group = "report"
	set, err := Compile([]Rule{counted, grouped}, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1000, 0)
	tests := []struct {
		name  string
		first string // fed to the first engine
		then  string // fed to a second engine of the same set
		want  []string
	}{
		{"a count is per engine", "flap", "flap", nil},
		{"a report in progress is per engine", "Oops: 0000 [#1]", "Oops: 0002 [#1]", []string{"Oops"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := set.Engine(), set.Engine()
			a.Feed(Line{Text: tt.first, Time: at}, nil)
			var got []string
			for _, f := range b.Feed(Line{Text: tt.then, Time: at.Add(time.Second)}, nil) {
				got = append(got, f.Reason)
			}
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Errorf("second engine gave %v, want %v", got, tt.want)
			}
		})
	}
}

// The compiled patterns are shared; with -race this shows that engines of
// one set may run on goroutines of their own.
func TestEnginesOfOneRuleSetRunConcurrently(t *testing.T) {
	set, err := Compile([]Rule{event("hung", "TaskHung", "blocked", `INFO: task \S+:\d+ blocked`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	found := make([]int, 4)
	for i := range found {
		wg.Go(func() {
			e := set.Engine()
			for j := range 100 {
				// Each line its own, so that none is a storm's repeat.
				line := fmt.Sprintf("INFO: task dd:%d blocked for more than 120 seconds.", j)
				found[i] += len(e.Feed(Line{Text: line, Time: time.Unix(int64(j), 0)}, nil))
			}
		})
	}
	wg.Wait()
	for i, n := range found {
		if n != 100 {
			t.Errorf("engine %d found %d of 100", i, n)
		}
	}
}

func TestRuleSetKeepsItsRulesAndConditions(t *testing.T) {
	cond := finding.ConditionDefault{Type: "WidgetJammed", Reason: "WidgetsTurning", Message: "fine"}
	rules := []Rule{{Name: "jam", Kind: finding.KindCondition, Condition: cond.Type, Reason: "Jam", Pattern: "jammed",
		ClearAfter: finding.Duration{Duration: time.Minute}}}
	set, err := Compile(rules, []finding.ConditionDefault{cond})
	if err != nil {
		t.Fatal(err)
	}
	rules[0].Name = "changed after compiling"
	if got := set.Rules(); len(got) != 1 || got[0].Name != "jam" {
		t.Errorf("Rules() = %+v, want the rule as compiled", got)
	}
	if got := set.Conditions(); len(got) != 1 || got[0] != cond {
		t.Errorf("Conditions() = %+v, want %+v", got, cond)
	}
	if got := set.Engine().Conditions(); len(got) != 1 || got[0] != cond {
		t.Errorf("an engine's Conditions() = %+v, want %+v", got, cond)
	}
}
