package benchlog_test

import (
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/internal/benchlog"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logrules/kernelrules"
)

// Every problem line makes a finding, so the benchmark's ~1% is real.
func TestProblemLinesAreProblems(t *testing.T) {
	e, err := logrules.NewEngine(kernelrules.Rules(), kernelrules.Conditions())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(0, 0)
	for _, l := range benchlog.ProblemLines {
		at = at.Add(time.Hour) // keep reports and windows apart
		// A report's finding comes when it ends; each line is one report.
		got := e.Feed(logrules.Line{Text: l, Time: at}, []finding.Finding(nil))
		if got = e.Flush(got); len(got) == 0 {
			t.Errorf("no finding for %q", l)
		}
	}
}
