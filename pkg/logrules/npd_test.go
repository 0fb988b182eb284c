package logrules

import (
	"strings"
	"testing"
)

func TestRequiredLiteral(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{`Killed process \d+ \(`, "Killed process "},
		{`INFO: task \S+:\d+ blocked for more than \d+ seconds`, " blocked for more than "},
		{`(?:Remounting filesystem read-only)$`, "Remounting filesystem read-only"},
		{`foo|bar`, ""},
		{`(?i)oops`, ""},
		{`(abc)+x`, "abc"},
		{`[`, ""},
	}
	for _, tt := range tests {
		if got := RequiredLiteral(tt.pattern); got != tt.want {
			t.Errorf("RequiredLiteral(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
}

func TestNPDErrorsNameFileRuleAndField(t *testing.T) {
	tests := []struct{ json, want string }{
		{`{"rules":[{"type":"sometimes","reason":"X","pattern":"y"}]}`, `f.json: rules[0].type: "sometimes"`},
		{`{"rules":[{"type":"permanent","condition":"Nope","reason":"X","pattern":"y"}]}`, `f.json: rules[0].condition: condition "Nope"`},
		{`{"rules":[{"type":"temporary","reason":"X","pattern":"("}]}`, `f.json: rules[0]: rule 0 ("npd-0-X"): field pattern`},
		{`{"rules":[{"type":"temporary","reason":"X","pattern":""}]}`, `f.json: rules[0].pattern: empty pattern`},
		{`{"plugin":"custom"}`, `f.json: field plugin`},
		{`{"plugin":"journald"}`, `journald monitors (kubelet, runtime units) are not kernel log rules`},
		{`{"conditions":[{"type":"A"}]}`, `f.json: conditions[0]`},
		{`not json`, `f.json: not a log monitor config`},
	}
	for _, tt := range tests {
		_, _, err := ParseNPD("f.json", []byte(tt.json))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseNPD(%s) = %v, want an error holding %q", tt.json, err, tt.want)
		}
	}
}

func FuzzParseNPD(f *testing.F) {
	f.Add([]byte(`{"rules":[{"type":"temporary","reason":"X","pattern":"a\\nb"}]}`))
	f.Add([]byte(`{"conditions":[{"type":"A","reason":"B"}],"rules":[{"type":"permanent","condition":"A","reason":"C","pattern":"x+"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, conds, err := ParseNPD("fuzz.json", data)
		if err != nil {
			return
		}
		// Whatever loads must also build an engine.
		if _, err := NewEngine(rules, conds); err != nil {
			t.Fatalf("ParseNPD accepted rules NewEngine rejects: %v", err)
		}
	})
}
