package kernelrules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// corpusLogs returns the contents of every log file in our corpus and, when
// it is there, the shared one.
func corpusLogs(tb testing.TB) []string {
	var out []string
	for _, dir := range []string{ownCorpus, sharedCorpus} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, string(b))
		}
	}
	return out
}

// FuzzEngineFeed feeds arbitrary text, line by line, to an engine with the
// built-in rules, with the clock from the lines (or stepping by step
// milliseconds, which may go backwards), expiring between lines.
func FuzzEngineFeed(f *testing.F) {
	for _, log := range corpusLogs(f) {
		f.Add(log, int16(1))
	}
	for _, l := range ruleCases {
		f.Add(l.line, int16(0))
	}
	f.Add("Kernel panic - not syncing: x\n---[ end Kernel panic - not syncing: x ]---\n", int16(-5))
	f.Add("unregister_netdevice: waiting for a to become free\n", int16(32767))
	const pod, container = "aa0e1c54-0b53-4d06-a4a5-7b6f4c3d2e1f", "5f4e3d2c1b0a99887766554433221100ffeeddccbbaa99887766554433221100"
	f.Add("oom-kill:task_memcg=/kubepods/pod"+pod+"/"+container+",pid=1\nTasks in /x are going to be killed due to memory.oom.group set\nKilled process 1 (a)\nKilled process 1 (a)\n", int16(0))
	f.Fuzz(func(t *testing.T, log string, step int16) {
		e := defaultEngine(t)
		now := time.Unix(1_700_000_000, 0)
		for line := range strings.Lines(log) {
			p := logrules.ParseKernelLine(line)
			if p.HasTime {
				now = time.Unix(0, 0).Add(p.Monotonic)
			} else {
				now = now.Add(time.Duration(step) * time.Millisecond)
			}
			out := e.Expire(now, nil)
			out = e.Feed(logrules.Line{Text: p.Text, Time: now, Source: "fuzz"}, out)
			for _, fd := range out {
				if err := fd.Validate(); err != nil {
					t.Fatalf("line %q made an invalid finding %+v: %v", line, fd, err)
				}
			}
		}
	})
}
