package logrules

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// TestJudge checks the judge against score-replay's rules, so that a corpus
// pass here means a pass there.
func TestJudge(t *testing.T) {
	ev := func(reason, msg string) finding.Finding {
		return finding.Finding{Kind: finding.KindEvent, Reason: reason, Message: msg}
	}
	cond := func(typ string, status finding.Status) finding.Finding {
		return finding.Finding{Kind: finding.KindCondition, Type: typ, Status: status, Reason: "R", Message: "m"}
	}
	tests := []struct {
		name  string
		spec  Expectation
		found []finding.Finding
		want  []string
	}{
		{"empty ok", Expectation{}, nil, nil},
		{"false positive", Expectation{}, []finding.Finding{ev("IOError", "x"), ev("IOError", "y")}, []string{"unexpected IOErrorx2"}},
		{"missing", Expectation{Required: []string{"OOMKilling"}}, nil, []string{"missing OOMKilling"}},
		{"optional allowed", Expectation{Optional: []string{"IOError"}}, []finding.Finding{ev("IOError", "x")}, nil},
		{"count", Expectation{Required: []string{"A"}, Counts: map[string]int{"A": 1}}, []finding.Finding{ev("A", ""), ev("A", "")}, []string{"A: 2 found, 1 expected"}},
		{"zero count of an absent name", Expectation{Counts: map[string]int{"A": 0}}, nil, nil},
		{"contains", Expectation{Required: []string{"A"}, Contains: map[string][]string{"A": {"pid 1", "pid 2"}}}, []finding.Finding{ev("A", "pid 1 x"), ev("A", "y")}, []string{`A: no message holds "pid 2"`}},
		{"condition True counts under its type", Expectation{Required: []string{"KernelDeadlock"}}, []finding.Finding{cond("KernelDeadlock", finding.StatusTrue)}, nil},
		{"condition without status counts as True", Expectation{}, []finding.Finding{cond("KernelDeadlock", "")}, []string{"unexpected KernelDeadlockx1"}},
		{"condition False does not count", Expectation{}, []finding.Finding{cond("KernelDeadlock", finding.StatusFalse)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Judge(tt.spec, tt.found); !slices.Equal(got, tt.want) {
				t.Errorf("Judge = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseExpectationsErrors(t *testing.T) {
	tests := []struct {
		name, text string
		want       string // the error, after "expect e.json"
	}{
		{"not an object", `["a"]`, `:1: want a JSON object of log file names`},
		{"unknown key", "{\n \"a.log\": {\n  \"required\": [],\n  \"contain\": {}\n }\n}", `:4: entry "a.log": field contain: is not one of required, optional, counts, contains`},
		{"wrong type", "{\n \"a.log\": {\n  \"required\": \"OOMKilling\"\n }\n}", `:3: entry "a.log": field required: is string, want a list`},
		{"negative count", "{\n \"a.log\": {\"required\": [],\n  \"counts\": {\"X\": -1}}\n}", `:3: entry "a.log": field counts.X: -1 is negative`},
		{"empty name", "{\"a.log\": {\"required\": [\"\"]}}", `:1: entry "a.log": field required[0]: an empty name`},
		{"named twice", "{\"a.log\": {\"required\": []},\n\"a.log\": {\"required\": []}}", `:2: entry "a.log": named twice`},
		{"cut short", "{\"a.log\": {\"required\": [", `:1: entry "a.log": the file ends inside the object: unexpected EOF`},
		{"more after it", "{\"a.log\": {\"required\": []}}\n}", `:2: more after the object`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseExpectations("e.json", []byte(tt.text))
			var ee *ExpectError
			if !errors.As(err, &ee) {
				t.Fatalf("error %v (%T), want an *ExpectError", err, err)
			}
			if got := strings.TrimPrefix(err.Error(), "expect e.json"); got != tt.want {
				t.Errorf("error\n got  %s\n want %s", got, tt.want)
			}
		})
	}
}

func TestParseExpectationsSkipsComments(t *testing.T) {
	got, err := ParseExpectations("e.json", []byte(`{"_doc": "about", "a.log": {"required": ["X"], "contains": {"X": ["y"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Expectations{"a.log": {Required: []string{"X"}, Contains: map[string][]string{"X": {"y"}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestExpectationsMerge(t *testing.T) {
	e := Expectations{
		"a.log": {Required: []string{"A"}, Counts: map[string]int{"A": 1}, Contains: map[string][]string{"A": {"x"}}},
	}
	e.Merge(Expectations{
		"a.log": {Required: []string{"A", "B"}, Optional: []string{"C"}, Counts: map[string]int{"A": 2}, Contains: map[string][]string{"A": {"x", "y"}, "B": {"z"}}},
		"b.log": {Required: []string{}},
	})
	want := Expectations{
		"a.log": {Required: []string{"A", "B"}, Optional: []string{"C"}, Counts: map[string]int{"A": 2}, Contains: map[string][]string{"A": {"x", "y"}, "B": {"z"}}},
		"b.log": {Required: []string{}},
	}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("merged\n %+v\nwant\n %+v", e, want)
	}
	if got := e.Names(); !slices.Equal(got, []string{"a.log", "b.log"}) {
		t.Errorf("Names = %v", got)
	}
}
