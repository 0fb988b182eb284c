package kernelrules

import (
	"io"
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nodeguard/nodeguard/internal/benchlog"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// TestOnePassMatchesPerRuleSearch is the differential test of the one
// pass: each rule on its own (built-in and NPD's kernel-monitor.json, a
// rule set without literals of its own), over every corpus line, the
// rule cases and benchmark lines, matches exactly the lines that the
// engine before it matched: those holding the rule's literal (a substring
// search per rule) that its pattern matches and its exclude does not.
func TestOnePassMatchesPerRuleSearch(t *testing.T) {
	npd, npdConds, err := logrules.LoadNPD("testdata/npd/kernel-monitor.json")
	if err != nil {
		t.Fatal(err)
	}
	rules, conds := logrules.AddNPD(Rules(), Conditions(), npd, npdConds)
	runtime, runtimeConds := RuntimeRules()
	rules, conds = append(rules, runtime...), append(conds, runtimeConds...)

	var lines []string
	for _, log := range corpusLogs(t) {
		for line := range strings.Lines(log) {
			lines = append(lines, logrules.ParseKernelLine(line).Text)
		}
	}
	for _, c := range ruleCases {
		lines = append(lines, c.line)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		lines = append(lines, benchlog.Line(r, 10))
	}

	matched := 0
	for _, rule := range rules {
		// One line alone decides: no count to reach, no report to fold.
		rule.MinCount, rule.Group = 0, ""
		set, err := logrules.Compile([]logrules.Rule{rule}, conds)
		if err != nil {
			t.Fatalf("rule %s: %v", rule.Name, err)
		}
		re := regexp.MustCompile(rule.Pattern)
		var exclude *regexp.Regexp
		if rule.Exclude != "" {
			exclude = regexp.MustCompile(rule.Exclude)
		}
		literal := rule.Contains
		if literal == "" {
			literal = logrules.RequiredLiteral(rule.Pattern)
		}
		for _, line := range lines {
			want := strings.Contains(line, literal) && re.MatchString(line) && (exclude == nil || !exclude.MatchString(line))
			e := set.Engine()
			got := len(e.Flush(e.Feed(logrules.Line{Text: line, Time: time.Unix(100, 0)}, nil))) > 0
			if got != want {
				t.Errorf("rule %s on %q: one pass matched %v, a search per rule %v", rule.Name, line, got, want)
			}
			if got {
				matched++
			}
		}
	}
	if matched < 100 {
		t.Errorf("only %d matches over %d lines: the comparison saw too few", matched, len(lines))
	}
}

// TestReplayKeepsNoLine: replay reuses its buffer from read to read, so a
// finding or report that kept a line's text, not a copy, would change as
// later lines are read. Each corpus log (smaller than one read) replays
// read whole and read a byte at a time, the buffer then rewritten at
// every line: the findings must be the same.
func TestReplayKeepsNoLine(t *testing.T) {
	replay := func(r io.Reader) []finding.Finding {
		var found []finding.Finding
		if err := logrules.Replay(r, "log", defaultEngine(t), func(f finding.Finding) { found = append(found, f) }); err != nil {
			t.Fatal(err)
		}
		return found
	}
	n := 0
	for _, log := range corpusLogs(t) {
		whole := replay(strings.NewReader(log))
		if got := replay(iotest.OneByteReader(strings.NewReader(log))); !reflect.DeepEqual(got, whole) {
			t.Errorf("read a byte at a time, a log made\n%v\nread whole\n%v", got, whole)
		}
		n += len(whole)
	}
	if n < 50 {
		t.Errorf("the corpus made only %d findings", n)
	}
}
