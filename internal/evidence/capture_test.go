package evidence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

var t0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

// rig is a capturer behind a real reporter, as the agent wires it, with
// its worker running and its events collected.
type rig struct {
	c      *Capturer
	rep    *reporter.Reporter
	events chan finding.Finding
	recent *Recent
	n      int
}

func newRig(t *testing.T, dir string, change func(*Options)) *rig {
	t.Helper()
	recent := NewRecent(64<<10, 16<<10)
	opts := Options{
		Dir: dir, Conditions: []string{finding.KernelDeadlock.Type, finding.ReadonlyFilesystem.Type},
		Window: 5 * time.Minute, MaxDirBytes: 1 << 20, MaxTotalBytes: 16 << 20, TopProcesses: 5,
		Timeout: 10 * time.Second, QueueSize: 4, ProcPath: "/proc", Recent: recent,
		Now: func() time.Time { return t0.Add(time.Hour) },
	}
	if change != nil {
		change(&opts)
	}
	r := &rig{c: New(opts), events: make(chan finding.Finding, 200), recent: recent}
	owned := []finding.ConditionDefault{finding.KernelDeadlock, finding.ReadonlyFilesystem, finding.NICFlapping}
	r.rep = reporter.New(zap.NewNop(), owned, r.c)
	r.rep.Start(nil, time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.c.Run(ctx, func(f finding.Finding) { r.events <- f }) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// transition turns typ True and back to False, with a time of its own so
// that each is a new transition.
func (r *rig) transition(typ string) {
	r.n++
	at := t0.Add(time.Duration(r.n) * time.Second)
	f := finding.Condition(typ, finding.StatusTrue, "Broken", fmt.Sprintf("broken, time %d", r.n))
	f.Check, f.Time, f.Facts = "test", at, map[string]string{"device": "loop7", "transition": fmt.Sprint(r.n)}
	r.rep.Report(f)
	ok := finding.Condition(typ, finding.StatusFalse, "Fine", "fine")
	ok.Check, ok.Time = "test", at.Add(time.Millisecond)
	r.rep.Report(ok)
}

func (r *rig) event(t *testing.T) finding.Finding {
	t.Helper()
	select {
	case f := <-r.events:
		return f
	case <-time.After(20 * time.Second):
		t.Fatal("no EvidenceCaptured event within 20 s")
		return finding.Finding{}
	}
}

func (r *rig) noEvent(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case f := <-r.events:
		t.Fatalf("unexpected event %+v", f)
	case <-time.After(within):
	}
}

func TestCaptureWritesEveryFile(t *testing.T) {
	dir := t.TempDir()
	r := newRig(t, dir, nil)
	r.recent.Kernel.Add(t0.Add(-time.Hour), "an old line, out of the window")
	r.recent.Kernel.Add(t0.Add(time.Hour-time.Minute), "INFO: task containerd:4242 blocked for more than 120 seconds.")
	r.recent.Service.Add(t0.Add(time.Hour-time.Minute), "kubelet.service: PLEG is not healthy")
	r.transition(finding.KernelDeadlock.Type)
	ev := r.event(t)
	if ev.Reason != Reason || ev.Kind != finding.KindEvent || !strings.HasPrefix(ev.Source, dir) || !strings.Contains(ev.Message, ev.Source) {
		t.Fatalf("event %+v", ev)
	}
	for _, name := range Files {
		b, err := os.ReadFile(filepath.Join(ev.Source, name))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v, %d bytes", name, err, len(b))
		}
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(ev.Source, name))
		return string(b)
	}
	if k := read("kernel.log"); !strings.Contains(k, "containerd:4242") || strings.Contains(k, "an old line") {
		t.Errorf("kernel.log:\n%s", k)
	}
	if j := read("journal.log"); !strings.Contains(j, "PLEG is not healthy") {
		t.Errorf("journal.log:\n%s", j)
	}
	if c := read("condition.json"); !strings.Contains(c, `"device": "loop7"`) || !strings.Contains(c, `"condition": "KernelDeadlock"`) {
		t.Errorf("condition.json:\n%s", c)
	}
	if p := read("processes.txt"); !strings.Contains(p, "by resident memory") || !strings.Contains(p, "by CPU time") {
		t.Errorf("processes.txt:\n%s", p)
	}
	if m := read("mountinfo"); !strings.Contains(m, " / ") {
		t.Errorf("mountinfo:\n%s", m)
	}
	if got := testutil.ToFloat64(r.c.capturedTotal); got != 1 {
		t.Errorf("captured_total = %v, want 1", got)
	}
}

func TestOnlyNewTransitionsOfWantedTypesCapture(t *testing.T) {
	r := newRig(t, t.TempDir(), nil)
	// A noisy type is not wanted by default.
	types, unknown := Wanted([]finding.ConditionDefault{finding.KernelDeadlock, finding.NICFlapping, finding.Degraded}, nil)
	if !slices.Equal(types, []string{finding.KernelDeadlock.Type}) || unknown != nil {
		t.Errorf("Wanted by default = %v, %v; want KernelDeadlock alone (the others are noisy)", types, unknown)
	}
	if types, unknown := Wanted([]finding.ConditionDefault{finding.KernelDeadlock, finding.NICFlapping}, []string{"NICFlapping", "Typo"}); !slices.Equal(types, []string{"NICFlapping"}) || !slices.Equal(unknown, []string{"Typo"}) {
		t.Errorf("Wanted named = %v, %v", types, unknown)
	}
	r.transition(finding.NICFlapping.Type) // not in Options.Conditions
	r.noEvent(t, 300*time.Millisecond)
	// True, then a new message while it stays True: one capture.
	f := finding.Condition(finding.KernelDeadlock.Type, finding.StatusTrue, "Hung", "first")
	f.Check, f.Time = "test", t0
	r.rep.Report(f)
	f.Message, f.Time = "second", t0.Add(time.Second)
	r.rep.Report(f)
	r.event(t)
	r.noEvent(t, 300*time.Millisecond)
}

func TestATrueConditionAdoptedAtStartDoesNotCapture(t *testing.T) {
	c := New(Options{Dir: t.TempDir(), Conditions: []string{finding.KernelDeadlock.Type}, QueueSize: 1, Timeout: time.Second})
	rep := reporter.New(zap.NewNop(), []finding.ConditionDefault{finding.KernelDeadlock}, c)
	found := finding.Condition(finding.KernelDeadlock.Type, finding.StatusTrue, "Hung", "from the Node")
	rep.Start([]reporter.Condition{{Finding: found, Since: t0}}, time.Time{})
	f := found
	f.Check, f.Time, f.Message = "kmsg", t0.Add(time.Minute), "the check's word"
	rep.Report(f) // the check says so too: the same transition
	if len(c.queue) != 0 {
		t.Errorf("a condition True since before the agent started queued %d captures", len(c.queue))
	}
}

// TestCapsHoldOver100Transitions: 100 transitions, each with a kernel
// ring fuller than a directory may be, keep every directory within its
// cap (cut with a mark) and all of them within the total, oldest gone.
func TestCapsHoldOver100Transitions(t *testing.T) {
	dir := t.TempDir()
	const perDir, total = 16 << 10, 100 << 10
	r := newRig(t, dir, func(o *Options) { o.MaxDirBytes, o.MaxTotalBytes = perDir, total })
	for i := range 2000 {
		r.recent.Kernel.Add(t0.Add(time.Hour-time.Minute+time.Duration(i)*time.Millisecond), fmt.Sprintf("kernel line %04d %s", i, strings.Repeat("k", 40)))
	}
	var paths []string
	for i := range 100 {
		r.transition(finding.ReadonlyFilesystem.Type)
		ev := r.event(t)
		paths = append(paths, ev.Source)
		dirs, err := List(dir)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, d := range dirs {
			if d.Bytes > perDir {
				t.Fatalf("transition %d: %s holds %d bytes, over the %d cap", i, d.Path, d.Bytes, perDir)
			}
			sum += d.Bytes
		}
		if sum > total {
			t.Fatalf("transition %d: %d directories hold %d bytes, over the %d total", i, len(dirs), sum, total)
		}
	}
	dirs, _ := List(dir)
	// Room for a whole directory is made before each capture.
	if least := total / perDir; len(dirs) < least {
		t.Errorf("%d directories kept, want at least %d (the total over the cap)", len(dirs), least)
	}
	if last := dirs[len(dirs)-1].Path; last != paths[99] {
		t.Errorf("the newest directory kept is %s, want the last capture's, %s", last, paths[99])
	}
	if _, err := os.Stat(paths[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the first capture %s is still there: %v", paths[0], err)
	}
	k, _ := os.ReadFile(filepath.Join(paths[99], "kernel.log"))
	if !strings.HasPrefix(string(k), "[nodeguard: ") || !strings.Contains(string(k), "kernel line 1999") {
		t.Errorf("kernel.log was not cut to its newest lines with a mark:\n%.300s", k)
	}
	t.Logf("100 transitions: %d directories kept, newest %s", len(dirs), filepath.Base(paths[99]))
}

func TestFullDiskSkipsAndCounts(t *testing.T) {
	tmpfs := func(t *testing.T) string {
		if os.Geteuid() != 0 {
			t.Skip("mounting a tmpfs needs root")
		}
		dir := t.TempDir()
		// 64 KiB: the first capture's files do not fit.
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "nodeguard-evidence-test", dir).CombinedOutput(); err != nil {
			t.Skipf("mount tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		return dir
	}
	for _, tc := range []struct {
		name  string
		dir   func(t *testing.T) string
		write func(string, []byte) error
	}{
		{"a tmpfs too small", tmpfs, nil},
		{"a write error", func(t *testing.T) string { return t.TempDir() }, func(path string, data []byte) error {
			if strings.HasSuffix(path, "kernel.log") {
				return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
			}
			return os.WriteFile(path, data, 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			r := newRig(t, filepath.Join(dir, "evidence"), func(o *Options) { o.MaxDirBytes = 512 << 10 })
			if tc.write != nil {
				r.c.writeFile = tc.write
			}
			for i := range 3000 {
				r.recent.Kernel.Add(t0.Add(time.Hour-time.Minute+time.Duration(i)*time.Millisecond), fmt.Sprintf("line %04d %s", i, strings.Repeat("x", 60)))
			}
			r.transition(finding.KernelDeadlock.Type)
			waitFor(t, func() bool { return testutil.ToFloat64(r.c.skipped.WithLabelValues(SkipWrite)) == 1 })
			r.noEvent(t, 200*time.Millisecond)
			entries, _ := os.ReadDir(filepath.Join(dir, "evidence"))
			if len(entries) != 0 {
				t.Errorf("a failed capture left %v behind", entries)
			}
			// The capturer carries on: with room again, the next one is written.
			r.c.writeFile = func(path string, data []byte) error { return os.WriteFile(path, data[:min(len(data), 1024)], 0o600) }
			r.transition(finding.KernelDeadlock.Type)
			if ev := r.event(t); ev.Reason != Reason {
				t.Errorf("after the skip: %+v", ev)
			}
		})
	}
}

func TestQueueFullAndTimeoutSkipAndCount(t *testing.T) {
	block := make(chan struct{})
	r := newRig(t, t.TempDir(), func(o *Options) { o.QueueSize, o.Timeout = 1, 200*time.Millisecond })
	r.c.writeFile = func(path string, data []byte) error { <-block; return nil }
	// The first is taken by the worker and blocks, the second waits in the
	// queue, the third finds it full: no call waits on the capturer.
	start := time.Now()
	for range 3 {
		r.transition(finding.KernelDeadlock.Type)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("three transitions took %s: the reporter waited on the capturer", took)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(r.c.skipped.WithLabelValues(SkipQueueFull)) >= 1 })
	time.Sleep(400 * time.Millisecond) // past the deadline of the one blocked
	close(block)
	// The blocked one outlived its deadline.
	waitFor(t, func() bool { return testutil.ToFloat64(r.c.skipped.WithLabelValues(SkipTimeout)) >= 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("not within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFit(t *testing.T) {
	data := []byte("line one\nline two\nline three\nline four\n")
	for _, tc := range []struct {
		name     string
		limit    int64
		keepTail bool
		want     string // what the result must hold
	}{
		{"fits", 100, false, string(data)},
		{"head kept", 110, false, "padding line\n"},
		{"tail kept from a whole line", 120, true, "\nline four\n"},
		{"no room at all", 0, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			big := append([]byte(strings.Repeat("padding line\n", 10)), data...)
			in := data
			if tc.limit < int64(len(data)) || tc.name != "fits" {
				in = big
			}
			got := fit(in, tc.limit, tc.keepTail)
			if int64(len(got)) > tc.limit {
				t.Errorf("%d bytes, over the limit %d", len(got), tc.limit)
			}
			if !strings.Contains(string(got), tc.want) {
				t.Errorf("got %q, want it to hold %q", got, tc.want)
			}
			if len(in) > int(tc.limit) && tc.limit > 0 && !strings.Contains(string(got), "[nodeguard: ") {
				t.Errorf("cut without a mark: %q", got)
			}
		})
	}
}
