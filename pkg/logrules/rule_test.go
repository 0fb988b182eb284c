package logrules

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func names(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.Name
	}
	return out
}

func TestMerge(t *testing.T) {
	defaults := []Rule{
		event("a", "A", "a", "a"),
		event("b", "B", "b", "b"),
		event("c", "C", "c", "c"),
	}
	replacedB := event("b", "B2", "bb", "bb+")
	tests := []struct {
		name      string
		user      []Rule
		disable   []string
		wantNames []string
		wantErr   string
		check     func(t *testing.T, got []Rule)
	}{
		{name: "nothing to merge", wantNames: []string{"a", "b", "c"}},
		{
			name: "replace by name keeps the position", user: []Rule{replacedB}, wantNames: []string{"a", "b", "c"},
			check: func(t *testing.T, got []Rule) {
				if !reflect.DeepEqual(got[1], replacedB) {
					t.Errorf("rule b = %+v, want the user's %+v", got[1], replacedB)
				}
			},
		},
		{name: "append a new rule", user: []Rule{event("d", "D", "d", "d")}, wantNames: []string{"a", "b", "c", "d"}},
		{
			name: "a second user rule of a name replaces the first", user: []Rule{event("d", "D1", "d", "d"), event("d", "D2", "d", "d")},
			wantNames: []string{"a", "b", "c", "d"},
			check: func(t *testing.T, got []Rule) {
				if got[3].Reason != "D2" {
					t.Errorf("rule d has reason %s, want D2", got[3].Reason)
				}
			},
		},
		{name: "disable a default", disable: []string{"b"}, wantNames: []string{"a", "c"}},
		{name: "disable all", disable: []string{"c", "a", "b"}, wantNames: []string{}},
		{name: "disable a user rule", user: []Rule{event("d", "D", "d", "d")}, disable: []string{"d"}, wantNames: []string{"a", "b", "c"}},
		{name: "disable a replaced rule", user: []Rule{replacedB}, disable: []string{"b"}, wantNames: []string{"a", "c"}},
		{name: "disable unknown", disable: []string{"nope"}, wantErr: `"nope"`},
		{name: "disable twice", disable: []string{"a", "a"}, wantErr: `"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(defaults)
			got, err := Merge(defaults, tt.user, tt.disable)
			if !reflect.DeepEqual(defaults, before) {
				t.Errorf("Merge changed its defaults argument: %v", names(defaults))
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Merge error = %v, want one naming %s", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("Merge returned rules with its error: %v", names(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("Merge: %v", err)
			}
			if !slices.Equal(names(got), tt.wantNames) {
				t.Errorf("Merge names = %v, want %v", names(got), tt.wantNames)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestNewEngineErrors(t *testing.T) {
	good := func() Rule { return event("r", "Reason", "lit", "lit") }
	condRule := func() Rule {
		r := good()
		r.Kind, r.Condition = finding.KindCondition, "KernelDeadlock"
		return r
	}
	tests := []struct {
		name  string
		rule  func() Rule
		field string
	}{
		{"no name", func() Rule { r := good(); r.Name = ""; return r }, "name"},
		{"bad kind", func() Rule { r := good(); r.Kind = "alert"; return r }, "kind"},
		{"empty kind", func() Rule { r := good(); r.Kind = ""; return r }, "kind"},
		{"event with condition", func() Rule { r := good(); r.Condition = "KernelDeadlock"; return r }, "condition"},
		{"condition without type", func() Rule { r := condRule(); r.Condition = ""; return r }, "condition"},
		{"condition type not declared", func() Rule { r := condRule(); r.Condition = "NoSuchCondition"; return r }, "condition"},
		{"no reason", func() Rule { r := good(); r.Reason = ""; return r }, "reason"},
		{"missing pattern", func() Rule { r := good(); r.Pattern = ""; return r }, "pattern"},
		{"bad regex", func() Rule { r := good(); r.Pattern = `lit(`; return r }, "pattern"},
		{"bad regex syntax of another engine", func() Rule { r := good(); r.Pattern = `(?<=x)lit`; return r }, "pattern"},
		{"bad exclude", func() Rule { r := good(); r.Exclude = `[veth`; return r }, "exclude"},
		{"negative minCount", func() Rule { r := good(); r.MinCount = -1; return r }, "minCount"},
		{"minCount without window", func() Rule { r := good(); r.MinCount = 3; return r }, "window"},
		{"bad attribute", func() Rule { r := good(); r.Attribute = "pod"; return r }, "attribute"},
		{"clearAfter on an event", func() Rule { r := good(); r.ClearAfter = finding.Duration{Duration: 5 * time.Minute}; return r }, "clearAfter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := tt.rule()
			// The bad rule comes after a good one so that the index is checked.
			e, err := NewEngine([]Rule{event("first", "R", "x", "x"), bad}, testConditions)
			if e != nil {
				t.Error("NewEngine returned an engine with its error")
			}
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("NewEngine error = %v (%T), want a *RuleError", err, err)
			}
			if re.Field != tt.field {
				t.Errorf("RuleError.Field = %q, want %q (%v)", re.Field, tt.field, re)
			}
			if re.Index != 1 || re.Name != bad.Name {
				t.Errorf("RuleError names rule %d %q, want 1 %q", re.Index, re.Name, bad.Name)
			}
			msg := re.Error()
			if !strings.Contains(msg, "field "+tt.field) || !strings.Contains(msg, "rule 1") {
				t.Errorf("error text %q does not name the rule and field", msg)
			}
		})
	}
}

func TestNewEngineAccepts(t *testing.T) {
	tests := []struct {
		name  string
		rule  Rule
		conds []finding.ConditionDefault
	}{
		{"minCount 1 needs no window", func() Rule { r := event("r", "R", "x", "x"); r.MinCount = 1; return r }(), nil},
		{"user condition type", Rule{Name: "r", Kind: finding.KindCondition, Condition: "DiskIOStuck", Reason: "R", Contains: "x", Pattern: "x"},
			[]finding.ConditionDefault{{Type: "DiskIOStuck", Reason: "DiskIOIsFine", Message: "ok"}}},
		{"condition that clears", Rule{Name: "r", Kind: finding.KindCondition, Condition: "KernelDeadlock", Reason: "R", Contains: "x", Pattern: "x",
			ClearAfter: finding.Duration{Duration: time.Minute}}, testConditions},
		{"oom attribute", func() Rule { r := event("r", "R", "x", "x"); r.Attribute = "oom"; return r }(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewEngine([]Rule{tt.rule}, tt.conds); err != nil {
				t.Errorf("NewEngine: %v", err)
			}
		})
	}
}

// TestContainsDerived: a rule may leave out its literal; the engine derives
// one from the pattern, so that benign lines still skip the pattern.
func TestContainsDerived(t *testing.T) {
	tests := []struct {
		pattern, want string
		match, skip   string
	}{
		{`INFO: task \S+:\d+ blocked for more than \d+ seconds`, " blocked for more than ",
			"INFO: task x:1 blocked for more than 120 seconds", "INFO: task x:1 woke up"},
		{`(?:Remounting filesystem read-only)$`, "Remounting filesystem read-only",
			"EXT4-fs (sda1): Remounting filesystem read-only", "EXT4-fs (sda1): mounted"},
		// Nothing to derive: the pattern runs on every line, and still only
		// matching lines make findings.
		{`foo|bar`, "", "a bar", "baz"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			r := Rule{Name: "r", Kind: finding.KindEvent, Reason: "R", Pattern: tt.pattern}
			e, err := NewEngine([]Rule{r}, nil)
			if err != nil {
				t.Fatalf("a rule without contains: %v", err)
			}
			if got := e.rules[0].Contains; got != tt.want {
				t.Errorf("derived literal %q, want %q", got, tt.want)
			}
			if got := e.Feed(Line{Text: tt.match}, nil); len(got) != 1 {
				t.Errorf("%q made %d findings, want 1", tt.match, len(got))
			}
			if got := e.Feed(Line{Text: tt.skip}, nil); len(got) != 0 {
				t.Errorf("%q made %d findings, want none", tt.skip, len(got))
			}
		})
	}
}
