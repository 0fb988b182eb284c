package plugins

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/procfs"
	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/internal/testproc"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

func testEnv(t testing.TB) checks.Env {
	return checks.Env{Log: zaptest.NewLogger(t), Metrics: prometheus.NewRegistry()}
}

// script writes an executable shell script into a temporary directory and
// returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugin.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func dur(d time.Duration) *finding.Duration { return &finding.Duration{Duration: d} }

func TestRunPlugin(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "plain.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("0123456789", 10)
	tests := []struct {
		name       string
		path       string
		maxOutput  int
		wantStatus status
		wantResult string
		want       string // the message, or for errors a part of it
		prefix     bool
	}{
		{"exit 0", script(t, "echo '  all good  '; exit 0"), 80, statusOK, "ok", "all good", false},
		{"exit 1", script(t, "echo 'ntp is down'; exit 1"), 80, statusProblem, "problem", "ntp is down", false},
		{"exit 2", script(t, "echo 'cannot tell'; exit 2"), 80, statusUnknown, "unknown", "cannot tell", false},
		{"exit 3", script(t, "echo odd; exit 3"), 80, statusUnknown, "unknown", "odd", false},
		{"killed by a signal", script(t, "echo bye; kill -9 $$"), 80, statusUnknown, "unknown", "bye", false},
		{"stderr is not the message", script(t, "echo out; echo err >&2; exit 1"), 80, statusProblem, "problem", "out", false},
		{"cut at max_output_length", script(t, "echo "+long+"; exit 1"), 80, statusProblem, "problem", long[:80], false},
		{"cut at a character boundary", script(t, "printf 'aé'; exit 1"), 2, statusProblem, "problem", "a", false},
		{"zero length", script(t, "echo something; exit 1"), 0, statusProblem, "problem", "", false},
		{"4 MiB of output", script(t, "head -c 4194304 /dev/zero | tr '\\0' x; exit 1"), 80, statusProblem, "problem", strings.Repeat("x", 80), false},
		{"missing", filepath.Join(t.TempDir(), "absent.sh"), 80, statusUnknown, "error", "cannot start plugin ", true},
		{"not executable", notExec, 80, statusUnknown, "error", "cannot start plugin ", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := runPlugin(context.Background(), tt.path, nil, 5*time.Second, tt.maxOutput)
			if o.status != tt.wantStatus || o.result() != tt.wantResult {
				t.Errorf("status %d (%s), want %d (%s); message %q", o.status, o.result(), tt.wantStatus, tt.wantResult, o.message)
			}
			if tt.prefix && !strings.HasPrefix(o.message, tt.want) || !tt.prefix && o.message != tt.want {
				t.Errorf("message %q, want %q", o.message, tt.want)
			}
		})
	}
}

func TestRunPluginPassesArgs(t *testing.T) {
	o := runPlugin(context.Background(), script(t, `echo "$#:$1:$2"`), []string{"--count=3", "a b"}, time.Second, 80)
	if o.message != "2:--count=3:a b" {
		t.Errorf("message %q", o.message)
	}
}

// groupGone waits until no process is left in process group pgid (nor
// pids), reading /proc.
func groupGone(t *testing.T, pgid int, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := testproc.InGroup(pgid)
		for _, pid := range pids {
			if alive(pid) && !slices.Contains(left, pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes still running from process group %d: %v", pgid, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cleanupGroup kills, should a test fail, what is left of a plugin's
// process group (the plugin's pid is its id) and the pids it named.
func cleanupGroup(pids []int) {
	if len(pids) == 0 {
		return
	}
	if len(testproc.InGroup(pids[0])) > 0 {
		_ = syscall.Kill(-pids[0], syscall.SIGKILL)
	}
	for _, pid := range pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// alive says whether pid is a process that has not exited.
func alive(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	return err == nil && st.State != "Z"
}

func readPids(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the plugin did not say its pids: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid %q: %v", f, err)
		}
		pids = append(pids, n)
	}
	return pids
}

// TestHangingPluginIsKilledWithItsGroup: a plugin that hangs, having forked
// a child that would hang too, is killed at its timeout, and no process of
// its group is left.
func TestHangingPluginIsKilledWithItsGroup(t *testing.T) {
	tests := []struct {
		name        string
		body        string // $1 is where the plugin writes its pids
		timeout     time.Duration
		wantTimeout bool
		maxTook     time.Duration
	}{
		{"hangs with a child that hangs", `sleep 1000 & echo $$ $! > "$1"; echo partial; sleep 1000`, 300 * time.Millisecond, true, 3 * time.Second},
		{"the child ignores SIGTERM", `sh -c 'trap "" TERM; sleep 1000' & echo $$ $! > "$1"; sleep 1000`, 300 * time.Millisecond, true, 3 * time.Second},
		// Exits at once but leaves a child holding stdout open: the run
		// ends, and the child does not outlive it.
		{"exits, leaving a child behind", `sleep 1000 & echo $$ $! > "$1"; echo done; exit 0`, 10 * time.Second, false, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			path := script(t, tt.body)
			o := runPlugin(context.Background(), path, []string{pidFile}, tt.timeout, 80)
			pids := readPids(t, pidFile)
			t.Cleanup(func() { cleanupGroup(pids) })
			if o.timedOut != tt.wantTimeout {
				t.Errorf("timedOut = %v, want %v (result %s, message %q)", o.timedOut, tt.wantTimeout, o.result(), o.message)
			}
			if o.took > tt.maxTook {
				t.Errorf("the run took %s, want at most %s", o.took, tt.maxTook)
			}
			if tt.wantTimeout {
				if o.status != statusUnknown || o.result() != "timeout" || !strings.Contains(o.message, "timed out after "+tt.timeout.String()) {
					t.Errorf("result %s, message %q: want unknown, a timeout", o.result(), o.message)
				}
				if o.took < tt.timeout {
					t.Errorf("killed after %s, before its timeout %s", o.took, tt.timeout)
				}
			}
			// The script's pid is its group's id.
			groupGone(t, pids[0], pids...)
			t.Logf("run ended after %s (timeout %s), group %d gone", o.took, tt.timeout, pids[0])
		})
	}
}

// TestStopKillsARunningPlugin: when the agent stops, a run in progress is
// killed with its group, not waited for.
func TestStopKillsARunningPlugin(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan outcome)
	go func() {
		done <- runPlugin(ctx, script(t, `sleep 1000 & echo $$ $! > "$1"; sleep 1000`), []string{pidFile}, time.Hour, 80)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(pidFile); err == nil && len(strings.Fields(string(b))) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case o := <-done:
		if !o.stopped {
			t.Errorf("outcome %+v, want stopped", o)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("runPlugin did not return after its context ended")
	}
	pids := readPids(t, pidFile)
	t.Cleanup(func() { cleanupGroup(pids) })
	groupGone(t, pids[0], pids...)
}

// collect is an emit that keeps what it is given.
type collect struct {
	mu sync.Mutex
	fs []finding.Finding
}

func (c *collect) emit(f finding.Finding) { c.mu.Lock(); c.fs = append(c.fs, f); c.mu.Unlock() }
func (c *collect) all() []finding.Finding {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.fs)
}

// runFor runs the check for d and returns what it emitted.
func runFor(t *testing.T, c *Check, d time.Duration) []finding.Finding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got collect
	if err := c.Run(ctx, got.emit); err != nil {
		t.Fatal(err)
	}
	return got.all()
}

// TestSlowPluginIsNotStartedTwice: a plugin slower than its interval runs
// one at a time; the ticks it misses are counted as skipped.
func TestSlowPluginIsNotStartedTwice(t *testing.T) {
	log := filepath.Join(t.TempDir(), "runs")
	path := script(t, `echo start >> "$1"; sleep 0.6; echo end >> "$1"; exit 0`)
	env := testEnv(t)
	c, err := New(&Config{Monitors: []Monitor{{
		PluginConfig: PluginConfig{InvokeInterval: dur(100 * time.Millisecond), Timeout: dur(5 * time.Second)},
		Rules:        []Rule{{Type: temporary, Reason: "Slow", Path: path, Args: []string{log}}},
	}}}, env)
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, c, 2*time.Second)
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	starts := 0
	for i, l := range lines {
		want := "start"
		if i%2 == 1 {
			want = "end"
		}
		if l != want {
			t.Fatalf("runs overlapped: %q", lines)
		}
		if l == "start" {
			starts++
		}
	}
	if starts < 2 || starts > 4 {
		t.Errorf("%d runs in 2s of a 0.6s plugin, want 2 to 4", starts)
	}
	skipped := testutil.ToFloat64(c.metrics.skipped.WithLabelValues("monitors[0]", "0-Slow"))
	if skipped < 5 {
		t.Errorf("%v ticks skipped, want most of the 100ms ticks of 2s", skipped)
	}
	t.Logf("%d runs, %v ticks skipped", starts, skipped)
}

// TestConcurrencyBoundsAMonitor: with concurrency 1, three rules never run
// at the same time.
func TestConcurrencyBoundsAMonitor(t *testing.T) {
	log := filepath.Join(t.TempDir(), "runs")
	path := script(t, `echo "start $2" >> "$1"; sleep 0.2; echo "end $2" >> "$1"; exit 0`)
	one := 1
	var rules []Rule
	for i := range 3 {
		rules = append(rules, Rule{Type: temporary, Reason: "R", Path: path, Args: []string{log, strconv.Itoa(i)}})
	}
	c, err := New(&Config{Monitors: []Monitor{{
		PluginConfig: PluginConfig{InvokeInterval: dur(100 * time.Millisecond), Concurrency: &one},
		Rules:        rules,
	}}}, testEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	runFor(t, c, 1500*time.Millisecond)
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	seen := map[string]bool{}
	for i := 0; i+1 < len(lines); i += 2 {
		s, e := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if s[0] != "start" || e[0] != "end" || s[1] != e[1] {
			t.Fatalf("two runs at once with concurrency 1: %q", lines)
		}
		seen[s[1]] = true
	}
	if len(seen) != 3 {
		t.Errorf("rules that ran: %v, want all three", seen)
	}
}

// TestJudge follows NPD's custom plugin monitor through a sequence of runs:
// what each turns into.
func TestJudge(t *testing.T) {
	def := finding.ConditionDefault{Type: "NTPProblem", Reason: "NTPIsUp", Message: "ntp service is up"}
	type step struct {
		rule    int // index into the rules below
		out     outcome
		want    []string // findings, as kind:type:status:reason:message
		comment string
	}
	rules := []Rule{
		{Type: permanent, Condition: def.Type, Reason: "NTPIsDown", Path: "/p"},
		{Type: permanent, Condition: def.Type, Reason: "ClockSkewed", Path: "/q"},
		{Type: temporary, Reason: "NTPIsDown", Path: "/p"},
	}
	ok := func(msg string) outcome { return outcome{status: statusOK, message: msg} }
	bad := func(msg string) outcome { return outcome{status: statusProblem, message: msg} }
	unknown := func(msg string) outcome { return outcome{status: statusUnknown, message: msg} }
	notStarted := outcome{status: statusUnknown, message: "cannot start plugin /p: no such file", notStarted: os.ErrNotExist}
	tests := []struct {
		name           string
		messageChanges bool
		steps          []step
	}{
		{"permanent rule", false, []step{
			{0, ok("fine"), []string{"condition:NTPProblem:False:NTPIsUp:ntp service is up"}, "the first run is passed on, though nothing changed"},
			{0, ok("fine"), nil, "no change"},
			{0, bad("ntp down"), []string{"event:Warning:NTPIsDown:condition NTPProblem is now True (NTPIsDown): ntp down", "condition:NTPProblem:True:NTPIsDown:ntp down"}, ""},
			{0, bad("ntp down"), nil, "still True"},
			{0, bad("ntp down again"), nil, "a new message alone changes nothing by default"},
			{1, bad("skew 3s"), []string{"event:Warning:ClockSkewed:condition NTPProblem is now True (ClockSkewed): skew 3s", "condition:NTPProblem:True:ClockSkewed:skew 3s"}, "another rule's reason"},
			{0, unknown("no answer"), []string{"event:Normal:NTPIsUp:condition NTPProblem is now Unknown (NTPIsUp): no answer", "condition:NTPProblem:Unknown:NTPIsUp:no answer"}, "True to Unknown: the healthy reason, the plugin's message"},
			{0, unknown("still no answer"), nil, "Unknown stays Unknown"},
			{0, ok("fine"), []string{"event:Normal:NTPIsUp:condition NTPProblem is now False (NTPIsUp): ntp service is up", "condition:NTPProblem:False:NTPIsUp:ntp service is up"}, "Unknown to False: the healthy message"},
			{0, bad("down"), []string{"event:Warning:NTPIsDown:condition NTPProblem is now True (NTPIsDown): down", "condition:NTPProblem:True:NTPIsDown:down"}, ""},
			{0, ok("fine"), []string{"event:Normal:NTPIsUp:condition NTPProblem is now False (NTPIsUp): ntp service is up", "condition:NTPProblem:False:NTPIsUp:ntp service is up"}, "True to False"},
			{0, notStarted, []string{"event:Normal:NTPIsUp:condition NTPProblem is now Unknown (NTPIsUp): cannot start plugin /p: no such file", "condition:NTPProblem:Unknown:NTPIsUp:cannot start plugin /p: no such file"}, "a missing plugin: Unknown, saying why"},
		}},
		{"message changes", true, []step{
			{0, bad("ntp down"), []string{"event:Warning:NTPIsDown:condition NTPProblem is now True (NTPIsDown): ntp down", "condition:NTPProblem:True:NTPIsDown:ntp down"}, ""},
			{0, bad("ntp down"), nil, ""},
			{0, bad("ntp down again"), []string{"event:Warning:NTPIsDown:condition NTPProblem is now True (NTPIsDown): ntp down again", "condition:NTPProblem:True:NTPIsDown:ntp down again"}, "with enable_message_change_based_condition_update"},
		}},
		{"first run is Unknown", false, []step{
			{0, unknown("?"), []string{"event:Normal:NTPIsUp:condition NTPProblem is now Unknown (NTPIsUp): ?", "condition:NTPProblem:Unknown:NTPIsUp:?"}, ""},
		}},
		{"temporary rule", false, []step{
			{2, ok("fine"), nil, ""},
			{2, bad("ntp down"), []string{"event:Warning:NTPIsDown:ntp down"}, ""},
			{2, bad("ntp down"), []string{"event:Warning:NTPIsDown:ntp down"}, "every run that finds it"},
			{2, unknown("timed out"), []string{"event:Warning:NTPIsDown:timed out"}, "NPD makes the event for exit 2 and timeouts too"},
			{2, notStarted, nil, "a plugin that never started says nothing of the node"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := PluginConfig{EnableMessageChangeBasedConditionUpdate: &tt.messageChanges}
			c, err := New(&Config{Monitors: []Monitor{{Source: "ntp", PluginConfig: pc, Conditions: []finding.ConditionDefault{def}, Rules: rules}}}, testEnv(t))
			if err != nil {
				t.Fatal(err)
			}
			states := map[string]*condState{def.Type: {def: def, status: finding.StatusFalse, reason: def.Reason, message: def.Message}}
			for i, s := range tt.steps {
				var got []string
				for _, f := range c.judge(ran{c.rules[s.rule], s.out}, states) {
					if err := f.Validate(); err != nil {
						t.Errorf("step %d: invalid finding %+v: %v", i, f, err)
					}
					if f.Kind == finding.KindEvent {
						got = append(got, fmt.Sprintf("event:%s:%s:%s", f.Severity, f.Reason, f.Message))
					} else {
						got = append(got, fmt.Sprintf("condition:%s:%s:%s:%s", f.Type, f.Status, f.Reason, f.Message))
					}
				}
				if !slices.Equal(got, s.want) {
					t.Errorf("step %d (%s, %s): got\n  %q\nwant\n  %q", i, rules[s.rule].Reason, s.comment, got, s.want)
				}
			}
		})
	}
}

// TestShippedFilesRunWithTheirPluginsMissing: NPD's files name plugins
// this machine does not have. Each rule runs once at start, fails to start,
// and says so: permanent rules' conditions go Unknown with the error,
// temporary rules make no event, nothing crashes.
func TestShippedFilesRunWithTheirPluginsMissing(t *testing.T) {
	files := npdFiles(t)
	env := testEnv(t)
	c, err := New(&Config{Files: files}, env)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var got collect
	done := make(chan error)
	go func() { done <- c.Run(ctx, got.emit) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, r := range c.rules {
			n += int(testutil.ToFloat64(c.metrics.runs.WithLabelValues(r.mon.name, r.id, "error")))
		}
		if n == len(c.rules) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rules ran", n, len(c.rules))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The runs are counted before their outcome reaches the loop, and Run
	// may have stopped before the last: judge what got through.
	for _, f := range got.all() {
		switch {
		case f.Kind == finding.KindCondition && (f.Status != finding.StatusUnknown || !strings.Contains(f.Message, "cannot start plugin ")):
			t.Errorf("condition %s %s %q, want Unknown naming the missing plugin", f.Type, f.Status, f.Message)
		case f.Kind == finding.KindEvent && f.Severity != finding.SeverityInfo:
			t.Errorf("event %s %q: a missing plugin is no problem of the node", f.Reason, f.Message)
		}
	}
	if len(got.all()) == 0 {
		t.Error("no finding from any permanent rule")
	}
}
