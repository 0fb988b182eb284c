package kernelrules

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// sharedCorpus is the team's kernel log corpus, outside this module's tree.
const sharedCorpus = "../../../../shared/testdata/kmsg"

// ownCorpus is this package's kernel log corpus.
const ownCorpus = "testdata/kmsg"

// expectation is one file's entry in expect.json, as score-replay reads it.
type expectation struct {
	Required []string            `json:"required"`
	Optional []string            `json:"optional"`
	Counts   map[string]int      `json:"counts"`
	Contains map[string][]string `json:"contains"`
}

// loadExpectations reads dir/expect.json, skipping keys that start with "_"
// as score-replay does.
func loadExpectations(t *testing.T, dir string) map[string]expectation {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "expect.json"))
	if err != nil {
		t.Fatalf("reading expectations: %v", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatalf("parsing %s/expect.json: %v", dir, err)
	}
	out := map[string]expectation{}
	for name, v := range all {
		if strings.HasPrefix(name, "_") {
			continue
		}
		var e expectation
		dec := json.NewDecoder(strings.NewReader(string(v)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s/expect.json: entry %s: %v", dir, name, err)
		}
		out[name] = e
	}
	return out
}

// judge says what is wrong with findings against an expectation, the way
// /work/shared/tools/score-replay judges them: an event counts under its
// reason, a condition under its type while its status is True (a missing
// status counts as True); names neither required nor optional are false
// positives; counts are exact; each contains substring must be in some
// message of that name.
func judge(spec expectation, found []finding.Finding) []string {
	names := map[string]int{}
	messages := map[string][]string{}
	for _, f := range found {
		var name string
		if f.Kind == finding.KindCondition {
			if f.Status != "" && f.Status != finding.StatusTrue {
				continue
			}
			name = f.Type
		} else {
			name = f.Reason
		}
		names[name]++
		messages[name] = append(messages[name], f.Message)
	}
	var why []string
	var missing, extra []string
	for _, r := range spec.Required {
		if names[r] == 0 {
			missing = append(missing, r)
		}
	}
	for name, n := range names {
		if !slices.Contains(spec.Required, name) && !slices.Contains(spec.Optional, name) {
			extra = append(extra, fmt.Sprintf("%sx%d", name, n))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		why = append(why, "missing "+strings.Join(missing, ","))
	}
	if len(extra) > 0 {
		why = append(why, "unexpected "+strings.Join(extra, ","))
	}
	for _, k := range sortedKeys(spec.Counts) {
		if names[k] != spec.Counts[k] {
			why = append(why, fmt.Sprintf("%s: %d found, %d expected", k, names[k], spec.Counts[k]))
		}
	}
	for _, k := range sortedKeys(spec.Contains) {
		for _, sub := range spec.Contains[k] {
			if !slices.ContainsFunc(messages[k], func(m string) bool { return strings.Contains(m, sub) }) {
				why = append(why, fmt.Sprintf("%s: no message holds %q", k, sub))
			}
		}
	}
	return why
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func defaultEngine(t testing.TB) *logrules.Engine {
	t.Helper()
	e, err := logrules.NewEngine(Rules(), Conditions())
	if err != nil {
		t.Fatalf("built-in rules do not compile: %v", err)
	}
	return e
}

// replayFile runs a fresh engine of the built-in rules over one file, as `nodeguard replay`
// does, and returns every finding.
func replayFile(t *testing.T, path string) []finding.Finding {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []finding.Finding
	err = logrules.Replay(f, filepath.Base(path), defaultEngine(t), func(f finding.Finding) {
		found = append(found, f)
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return found
}

// runCorpus judges every expectation in dir and replays every log file in it;
// when strict, a log file without an expectation is an error (in our own
// corpus it is a test somebody forgot to finish).
func runCorpus(t *testing.T, dir string, strict bool) {
	expect := loadExpectations(t, dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, ent := range entries {
		if ent.Type().IsRegular() && ent.Name() != "expect.json" {
			files = append(files, ent.Name())
		}
	}
	for name := range expect {
		if !slices.Contains(files, name) {
			t.Errorf("expect.json names %s, which is not in %s", name, dir)
		}
	}
	for _, name := range files {
		t.Run(name, func(t *testing.T) {
			found := replayFile(t, filepath.Join(dir, name))
			for _, f := range found {
				if err := f.Validate(); err != nil {
					t.Errorf("invalid finding %+v: %v", f, err)
				}
				if !strings.HasPrefix(f.Source, name+":") {
					t.Errorf("finding source %q does not name the file and line", f.Source)
				}
			}
			spec, ok := expect[name]
			if !ok {
				if strict {
					t.Errorf("no expectation for %s in expect.json", name)
				} else {
					t.Logf("no expectation for %s; replayed it without judging (%d findings)", name, len(found))
				}
				return
			}
			if why := judge(spec, found); len(why) > 0 {
				for _, f := range found {
					t.Logf("found: %s %s %s %q (%s)", f.Kind, f.Reason, f.Type, f.Message, f.Source)
				}
				t.Errorf("FAIL %s: %s", name, strings.Join(why, "; "))
			}
		})
	}
}

func TestSharedCorpus(t *testing.T) {
	dir, err := filepath.Abs(sharedCorpus)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "expect.json")); err != nil {
		t.Skipf("shared kernel log corpus not available at %s (it lives outside this repository): %v", dir, err)
	}
	runCorpus(t, dir, false)
}

func TestOwnCorpus(t *testing.T) {
	runCorpus(t, ownCorpus, true)
}

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
		spec  expectation
		found []finding.Finding
		want  []string
	}{
		{"empty ok", expectation{}, nil, nil},
		{"false positive", expectation{}, []finding.Finding{ev("IOError", "x"), ev("IOError", "y")}, []string{"unexpected IOErrorx2"}},
		{"missing", expectation{Required: []string{"OOMKilling"}}, nil, []string{"missing OOMKilling"}},
		{"optional allowed", expectation{Optional: []string{"IOError"}}, []finding.Finding{ev("IOError", "x")}, nil},
		{"count", expectation{Required: []string{"A"}, Counts: map[string]int{"A": 1}}, []finding.Finding{ev("A", ""), ev("A", "")}, []string{"A: 2 found, 1 expected"}},
		{"zero count of an absent name", expectation{Counts: map[string]int{"A": 0}}, nil, nil},
		{"contains", expectation{Required: []string{"A"}, Contains: map[string][]string{"A": {"pid 1", "pid 2"}}}, []finding.Finding{ev("A", "pid 1 x"), ev("A", "y")}, []string{`A: no message holds "pid 2"`}},
		{"condition True counts under its type", expectation{Required: []string{"KernelDeadlock"}}, []finding.Finding{cond("KernelDeadlock", finding.StatusTrue)}, nil},
		{"condition without status counts as True", expectation{}, []finding.Finding{cond("KernelDeadlock", "")}, []string{"unexpected KernelDeadlockx1"}},
		{"condition False does not count", expectation{}, []finding.Finding{cond("KernelDeadlock", finding.StatusFalse)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := judge(tt.spec, tt.found); !slices.Equal(got, tt.want) {
				t.Errorf("judge = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestReplayClearsCondition: in a replay the quiet period runs on the lines'
// own clock, so a later line clears the condition.
func TestReplayClearsCondition(t *testing.T) {
	found := replayFile(t, "testdata/kmsg/unregister-netdevice-clears.log")
	var statuses []string
	for _, f := range found {
		if f.Type == "FrequentUnregisterNetDevice" {
			statuses = append(statuses, string(f.Status)+"@"+f.Source)
		}
	}
	want := []string{"True@unregister-netdevice-clears.log:3", "False@unregister-netdevice-clears.log:4"}
	if !slices.Equal(statuses, want) {
		t.Errorf("FrequentUnregisterNetDevice went %v, want %v", statuses, want)
	}
}
