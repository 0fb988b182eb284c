package fieldcheck

import (
	"reflect"
	"testing"

	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestErrorSaysWhatIsKnown(t *testing.T) {
	for _, tt := range []struct {
		err  Error
		want string
	}{
		{Error{File: "f.json", Line: 3, Field: "a.b", Reason: "bad"}, "f.json:3: field a.b: bad"},
		{Error{File: "f.json", Field: "a", Reason: "bad"}, "f.json: field a: bad"},
		{Error{Line: 3, Reason: "bad"}, "line 3: bad"},
		{Error{Reason: "bad"}, "bad"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestWalkerReadsJSON: JSON, read as YAML, gets the same checks and lines
// as the config file.
func TestWalkerReadsJSON(t *testing.T) {
	type rule struct {
		Name  string            `json:"name"`
		Every *finding.Duration `json:"every,omitempty"`
		N     *int              `json:"n,omitempty"`
	}
	type doc struct {
		Rules []rule `json:"rules"`
	}
	for _, tt := range []struct {
		json string
		want *Error // nil: no mistake
	}{
		{"{\n  \"rules\": [\n    {\"name\": \"a\", \"every\": \"5s\", \"n\": 3}\n  ]\n}", nil},
		{"{\n  \"rules\": [\n    {\"name\": \"a\"},\n    {\"nmae\": \"b\"}\n  ]\n}", &Error{Line: 4, Field: "rules[1].nmae"}},
		{"{\n\t\"rules\": [\n\t\t{\"name\": \"a\", \"every\": \"5 s\"}\n\t]\n}", &Error{Line: 3, Field: "rules[0].every"}},
		{"{\"rules\": [{\"name\": 7}]}", &Error{Line: 1, Field: "rules[0].name"}},
		{"{\"rules\": [{\"name\": \"a\", \"n\": \"3\"}]}", &Error{Line: 1, Field: "rules[0].n"}},
		{"{\"rules\": {\"name\": \"a\"}}", &Error{Line: 1, Field: "rules"}},
	} {
		var n yamlv3.Node
		if err := yamlv3.Unmarshal([]byte(tt.json), &n); err != nil {
			t.Fatalf("%s: %v", tt.json, err)
		}
		got := Walker{}.Check(n.Content[0], reflect.TypeFor[doc](), "")
		switch {
		case tt.want == nil && got != nil:
			t.Errorf("%s: %v", tt.json, got)
		case tt.want != nil && (got == nil || got.Line != tt.want.Line || got.Field != tt.want.Field):
			t.Errorf("%s: %v, want line %d field %s", tt.json, got, tt.want.Line, tt.want.Field)
		}
	}
	var n yamlv3.Node
	if err := yamlv3.Unmarshal([]byte("{\n  \"rules\": [\n    {\"name\": \"a\"},\n    {\n      \"name\": \"b\"\n    }\n  ]\n}"), &n); err != nil {
		t.Fatal(err)
	}
	if got := LineOf(n.Content[0], "rules[1].name"); got != 5 {
		t.Errorf("LineOf(rules[1].name) = %d, want 5", got)
	}
}
