package kernelrules

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/internal/benchlog"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// benchLines is how many lines one benchmark log holds.
const benchLines = 120_000

// problemLines are the positive cases of the built-in rules.
func problemLines() []string {
	var out []string
	for _, c := range ruleCases {
		if c.match {
			out = append(out, c.line)
		}
	}
	return out
}

// benchLog builds a log of n lines 5ms apart; problemEvery > 0 makes one line
// in problemEvery a problem line.
func benchLog(n, problemEvery int) []logrules.Line {
	r := rand.New(rand.NewPCG(1, 2))
	problems := problemLines()
	t0 := time.Unix(1_700_000_000, 0)
	lines := make([]logrules.Line, n)
	for i := range lines {
		var text string
		if problemEvery > 0 && r.IntN(problemEvery) == 0 {
			text = problems[r.IntN(len(problems))]
		} else {
			text = benchlog.BenignShapes[r.IntN(len(benchlog.BenignShapes))](r)
		}
		lines[i] = logrules.Line{Text: text, Time: t0.Add(time.Duration(i) * 5 * time.Millisecond)}
	}
	return lines
}

// feedBench feeds the whole log per op, later passes later in time so that
// windows and groups behave as in one long log.
func feedBench(b *testing.B, lines []logrules.Line) {
	e := defaultEngine(b)
	span := lines[len(lines)-1].Time.Sub(lines[0].Time) + time.Second
	out := make([]finding.Finding, 0, 16)
	var findings int
	// One pass before timing, so that the regexps' machines are warm.
	for _, l := range lines {
		out = e.Feed(l, out[:0])
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		shift := time.Duration(i+1) * span
		for _, l := range lines {
			l.Time = l.Time.Add(shift)
			out = e.Feed(l, out[:0])
			findings += len(out)
		}
	}
	b.StopTimer()
	total := float64(b.N) * float64(len(lines))
	reportRate(b, total, cpuTime()-cpu0)
	b.ReportMetric(float64(findings)/float64(b.N), "findings/op")
}

// reportRate reports lines per second of wall time and of the process's
// CPU time: on a shared machine the wall clock counts the time others ran.
func reportRate(b *testing.B, lines float64, cpu time.Duration) {
	b.ReportMetric(lines/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/lines, "ns/line")
	if cpu > 0 {
		b.ReportMetric(lines/cpu.Seconds(), "lines/cpu-s")
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPhysicalLimit is the floor the engine is measured against: the
// same lines, each searched once for one literal, the least any rule
// engine does per line.
func BenchmarkPhysicalLimit(b *testing.B) {
	lines := benchLog(benchLines, 100)
	n := 0
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range lines {
			if strings.Contains(l.Text, "Killed process") {
				n++
			}
		}
	}
	b.StopTimer()
	reportRate(b, float64(b.N)*float64(len(lines)), cpuTime()-cpu0)
	if n == 0 {
		b.Fatal("the log holds no OOM kill")
	}
}

// BenchmarkEngineFeed: 120k lines, about 1% of them problems.
func BenchmarkEngineFeed(b *testing.B) {
	feedBench(b, benchLog(benchLines, 100))
}

// BenchmarkEngineFeedBenign: 120k benign lines, which must allocate nothing.
func BenchmarkEngineFeedBenign(b *testing.B) {
	feedBench(b, benchLog(benchLines, 0))
}

// TestBenchLogBenign keeps the benign benchmark honest: its lines make no
// finding, and the mixed log's problem lines do.
func TestBenchLogBenign(t *testing.T) {
	e := defaultEngine(t)
	var out []finding.Finding
	for _, l := range benchLog(20_000, 0) {
		if out = e.Feed(l, out[:0]); len(out) > 0 {
			t.Fatalf("benign bench line %q made %v", l.Text, reasonsOf(out))
		}
	}
	n := 0
	for _, l := range benchLog(20_000, 100) {
		n += len(e.Feed(l, out[:0]))
	}
	if n < 100 {
		t.Errorf("the mixed log made only %d findings", n)
	}
}

// BenchmarkReplay is `nodeguard replay` without the process: a 120k-line
// dmesg log (1% problems), read, split, parsed and fed as replay does.
func BenchmarkReplay(b *testing.B) {
	var log bytes.Buffer
	r := rand.New(rand.NewPCG(1, 2))
	for i := range benchLines {
		fmt.Fprintf(&log, "[%d.%06d] %s\n", i/200, (i%200)*5000, benchlog.Line(r, 100))
	}
	set, err := logrules.Compile(Rules(), Conditions())
	if err != nil {
		b.Fatal(err)
	}
	findings := 0
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := set.Engine()
		e.SetDedupWindow(logrules.DefaultDedupWindow)
		if err := logrules.Replay(bytes.NewReader(log.Bytes()), "kern.log", e, func(finding.Finding) { findings++ }); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportRate(b, float64(b.N)*benchLines, cpuTime()-cpu0)
	b.ReportMetric(float64(findings)/float64(b.N), "findings/op")
}
