package kernelrules

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// sharedCorpus is the team's kernel log corpus, outside this module's tree.
const sharedCorpus = "../../../../shared/testdata/kmsg"

// ownCorpus is this package's kernel log corpus.
const ownCorpus = "testdata/kmsg"

// sharedExtra is this project's expectations for the shared corpus, which
// this project may not write to: the facts its reports' messages must
// name. TestSharedCorpus merges them over the corpus's own expect.json.
const sharedExtra = "testdata/shared-kmsg-expect.json"

func loadExpectations(t *testing.T, dir string) logrules.Expectations {
	t.Helper()
	expect, err := logrules.LoadExpectations(filepath.Join(dir, "expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	return expect
}

func defaultEngine(t testing.TB) *logrules.Engine {
	t.Helper()
	e, err := logrules.NewEngine(Rules(), Conditions())
	if err != nil {
		t.Fatalf("built-in rules do not compile: %v", err)
	}
	// The kmsg check's default window, as replay uses it.
	e.SetDedupWindow(logrules.DefaultDedupWindow)
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
func runCorpus(t *testing.T, dir string, expect logrules.Expectations, strict bool) {
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
			if why := logrules.Judge(spec, found); len(why) > 0 {
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
	expect := loadExpectations(t, dir)
	extra, err := logrules.LoadExpectations(sharedExtra)
	if err != nil {
		t.Fatal(err)
	}
	for name := range extra {
		if _, ok := expect[name]; !ok {
			t.Errorf("%s names %s, which the shared corpus's expect.json does not", sharedExtra, name)
		}
	}
	expect.Merge(extra)
	runCorpus(t, dir, expect, false)
}

func TestOwnCorpus(t *testing.T) {
	runCorpus(t, ownCorpus, loadExpectations(t, ownCorpus), true)
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
