package kmsg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logsource"
)

// feedSource stands in for /dev/kmsg: it hands the check the records the
// test chooses, each with its sequence number as its cursor, then waits.
type feedSource struct{ records []record }

type record struct {
	seq  int
	text string
	at   time.Time
}

func (s feedSource) Run(ctx context.Context, after string, emit func(logsource.Line)) error {
	from := -1
	if after != "" {
		from, _ = strconv.Atoi(after)
	}
	for _, r := range s.records {
		if r.seq <= from {
			continue
		}
		seq := strconv.Itoa(r.seq)
		emit(logsource.Line{Text: r.text, Time: r.at, Where: "kmsg seq " + seq, Cursor: seq})
	}
	<-ctx.Done()
	return nil
}

func runCheck(t *testing.T, c *Check, want int) []finding.Finding {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan finding.Finding, 100)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, func(f finding.Finding) { got <- f }) }()
	defer func() { cancel(); <-done }()
	var out []finding.Finding
	for len(out) < want {
		select {
		case f := <-got:
			out = append(out, f)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d findings, want %d: %+v", len(out), want, out)
		}
	}
	select {
	case f := <-got:
		t.Errorf("unexpected extra finding %+v", f)
	case <-time.After(100 * time.Millisecond):
	}
	return out
}

func TestCheckTurnsRecordsIntoFindings(t *testing.T) {
	now := time.Now()
	src := feedSource{records: []record{
		{seq: 1, text: "eth0: renamed from veth1234", at: now},
		{seq: 2, text: "INFO: task kubelet:881 blocked for more than 120 seconds.", at: now},
		{seq: 3, text: "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/burstable/pod0d1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8,task_memcg=/kubepods/burstable/pod0d1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8/" + strings.Repeat("ab", 32) + ",task=java,pid=4242,uid=0", at: now},
		{seq: 4, text: "Memory cgroup out of memory: Killed process 4242 (java) total-vm:100kB, anon-rss:90kB", at: now},
	}}
	c, err := New(DefaultConfig(), checks.Env{Log: zaptest.NewLogger(t)}, src)
	if err != nil {
		t.Fatal(err)
	}
	got := runCheck(t, c, 3)
	// The hung task's report goes out once it has gone quiet, after the OOM
	// kill's line, which ends no report.
	oom, hung, deadlock := got[0], got[1], got[2]
	if hung.Reason != "TaskHung" || deadlock.Type != "KernelDeadlock" || deadlock.Status != finding.StatusTrue {
		t.Errorf("hung kubelet gave %+v and %+v, want a TaskHung event and KernelDeadlock=True", hung, deadlock)
	}
	if hung.Source != "kmsg seq 2" {
		t.Errorf("TaskHung source %q, want its own line's, kmsg seq 2", hung.Source)
	}
	for _, want := range []string{"4242", "java", "0d1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8", strings.Repeat("ab", 32)} {
		if !strings.Contains(oom.Message, want) {
			t.Errorf("OOMKilling message %q lacks %q", oom.Message, want)
		}
	}
	if oom.Source != "kmsg seq 4" || !oom.Time.Equal(now) {
		t.Errorf("OOMKilling source %q time %v, want kmsg seq 4 at receive time %v", oom.Source, oom.Time, now)
	}
}

func TestUserRulesAndDisabledRules(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DisableRules = []string{"hung-task"}
	cfg.Conditions = append(cfg.Conditions, finding.ConditionDefault{Type: "CustomProblem", Reason: "NoCustomProblem", Message: "fine"})
	cfg.Rules = append(cfg.Rules, logrules.Rule{Name: "custom", Kind: finding.KindCondition, Condition: "CustomProblem",
		Reason: "FrobnicatorJammed", Contains: "frobnicator jammed", Pattern: `frobnicator jammed on bus \d+`})
	src := feedSource{records: []record{
		{seq: 1, text: "INFO: task dd:881 blocked for more than 120 seconds.", at: time.Now()},
		{seq: 2, text: "frobnicator jammed on bus 3", at: time.Now()},
	}}
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t)}, src)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, d := range c.Conditions() {
		types = append(types, d.Type)
	}
	if !strings.Contains(strings.Join(types, ","), "CustomProblem") {
		t.Errorf("owned conditions %v lack the user's CustomProblem", types)
	}
	got := runCheck(t, c, 1)
	if got[0].Type != "CustomProblem" || got[0].Status != finding.StatusTrue {
		t.Errorf("got %+v, want CustomProblem=True (and no TaskHung: that rule is disabled)", got[0])
	}
}

// A restart resumes after the last record reported; where the boot changes
// the cursor is the source's to judge (logsource's TestKmsgResumesInTheSameBootOnly).
func TestRestartResumesAfterLastReportedRecord(t *testing.T) {
	hung := func(seq int) record {
		return record{seq: seq, text: fmt.Sprintf("INFO: task dd:%d blocked for more than 120 seconds.", seq), at: time.Now()}
	}
	benign := record{seq: 14, text: "eth0: renamed from veth1234", at: time.Now()}
	env := checks.Env{Log: zaptest.NewLogger(t), StateDir: t.TempDir()}
	tests := []struct {
		records []record
		want    []string // TaskHung messages' pids, in order
	}{
		{[]record{hung(10), hung(11)}, []string{"dd:10", "dd:11"}}, // first start
		{[]record{hung(10), hung(11)}, nil},                        // restart: nothing again
		{[]record{hung(10), hung(11), hung(13), benign}, []string{"dd:13"}},
	}
	for i, tt := range tests {
		c, err := New(DefaultConfig(), env, feedSource{records: tt.records})
		if err != nil {
			t.Fatal(err)
		}
		got := runCheck(t, c, len(tt.want))
		for j, f := range got {
			if !strings.Contains(f.Message, tt.want[j]) {
				t.Errorf("start %d: finding %d = %q, want %s", i, j, f.Message, tt.want[j])
			}
		}
	}
	// Stopping saved the benign record's place too: it is not read again.
	if b, err := os.ReadFile(filepath.Join(env.StateDir, "kmsg-position.json")); err != nil || string(b) != "14" {
		t.Errorf("saved position %q, %v; want the last record's, 14", b, err)
	}
}

func TestCheckFollowsKernelLogFiles(t *testing.T) {
	path := t.TempDir() + "/kern.log"
	off := false
	cfg := DefaultConfig()
	cfg.DevKmsg = &off
	cfg.Files = []FileSource{{Path: path, FromStart: true}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	lines := "Nov 23 10:00:00 node-1 kernel: [ 3120.120000] ixgbe 0000:03:00.0 eth2: NIC Link is Down\n" +
		"Nov 23 10:00:01 node-1 myapp[33]: Killed process 1 (not a kernel line)\n" +
		"Nov 23 10:00:02 node-1 kernel: [ 3121.000000] EXT4-fs (xvdf): Remounting filesystem read-only\n"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := runCheck(t, c, 2)
	if got[0].Reason != "NICLinkDown" || got[0].Source != path+":1" {
		t.Errorf("first finding %s from %s, want NICLinkDown from %s:1", got[0].Reason, got[0].Source, path)
	}
	if got[1].Type != "ReadonlyFilesystem" || got[1].Source != path+":3" {
		t.Errorf("second finding %s from %s, want ReadonlyFilesystem from %s:3 (line 2 is not the kernel's)", got[1].Type, got[1].Source, path)
	}
	cfg.Files = nil
	if err := cfg.Validate(); err == nil {
		t.Error("devKmsg off with no files validated")
	}
}

func TestHungRuntimeTaskRaisesContainerRuntimeUnresponsive(t *testing.T) {
	now := time.Now()
	clock := now
	var mu sync.Mutex
	src := feedSource{records: []record{
		{seq: 1, text: "INFO: task containerd:870 blocked for more than 120 seconds.", at: now},
	}}
	cfg := DefaultConfig()
	cfg.ExpireInterval = finding.Duration{Duration: time.Second}
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t), Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }}, src)
	if err != nil {
		t.Fatal(err)
	}
	owns := false
	for _, d := range c.Conditions() {
		owns = owns || d.Type == "ContainerRuntimeUnresponsive"
	}
	if !owns {
		t.Fatal("the kmsg check does not own ContainerRuntimeUnresponsive")
	}
	ctx, cancel := context.WithCancel(context.Background())
	found := make(chan finding.Finding, 100)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, func(f finding.Finding) { found <- f }) }()
	defer func() { cancel(); <-done }()
	next := func() finding.Finding {
		t.Helper()
		select {
		case f := <-found:
			return f
		case <-time.After(5 * time.Second):
			t.Fatal("no finding within 5 s")
			return finding.Finding{}
		}
	}
	var raised finding.Finding
	for i := 0; i < 3; i++ {
		if f := next(); f.Type == "ContainerRuntimeUnresponsive" {
			raised = f
		}
	}
	if raised.Status != finding.StatusTrue || raised.Reason != "RuntimeTaskHung" {
		t.Errorf("findings of a hung containerd hold %+v, want ContainerRuntimeUnresponsive True, RuntimeTaskHung", raised)
	}
	// Ten quiet minutes later, in the same run, it clears.
	mu.Lock()
	clock = now.Add(11 * time.Minute)
	mu.Unlock()
	if f := next(); f.Type != "ContainerRuntimeUnresponsive" || f.Status != finding.StatusFalse {
		t.Errorf("after a quiet window: %+v, want ContainerRuntimeUnresponsive False", f)
	}
}

func TestKernelRulesReadOnlyTheKernelLog(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rules = []logrules.Rule{{Name: "x", Source: "journald:kubelet.service", Kind: finding.KindEvent, Reason: "X", Pattern: "x"}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "rules[0].source") {
		t.Errorf("Validate = %v, want an error naming rules[0].source", err)
	}
}

// TestPositionNotSavedPastHeldReport: while a report's findings wait for
// its end, the saved position stays before its first line, even when a
// later line reports at once; a restart then reads the report again rather
// than never.
func TestPositionNotSavedPastHeldReport(t *testing.T) {
	now := time.Now()
	env := checks.Env{Log: zaptest.NewLogger(t), StateDir: t.TempDir()}
	src := feedSource{records: []record{
		{seq: 4, text: "eth0: renamed from veth1234", at: now},
		{seq: 5, text: "INFO: task dd:881 blocked for more than 120 seconds.", at: now},
		{seq: 6, text: "EXT4-fs error (device sda1): ext4_find_entry:1436: inode #2: comm dd: reading directory lblock 0", at: now},
	}}
	c, err := New(DefaultConfig(), env, src)
	if err != nil {
		t.Fatal(err)
	}
	position := func() string {
		b, _ := os.ReadFile(filepath.Join(env.StateDir, "kmsg-position.json"))
		return string(b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan finding.Finding, 10)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, func(f finding.Finding) { got <- f }) }()
	defer func() { cancel(); <-done }()
	for _, want := range []string{"Ext4Error", "TaskHung"} {
		select {
		case f := <-got:
			if f.Reason != want {
				t.Fatalf("got %s, want %s next", f.Reason, want)
			}
			if want == "Ext4Error" {
				// The position of a reporting line is saved once its
				// findings are handed on; give that time, well within
				// the report's quiet period.
				time.Sleep(logrules.ReportQuiet / 4)
				if p := position(); p == "6" || p == "5" {
					t.Errorf("position %q saved while the hung task's report at 5 is held", p)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s", want)
		}
	}
}

// TestStormSummaryGoesOutLive: identical lines are one event, and the
// storm's summary goes out at the expiry tick after its window.
func TestStormSummaryGoesOutLive(t *testing.T) {
	now := time.Now()
	const line = "nvme nvme0: I/O 512 QID 3 timeout, aborting"
	src := feedSource{records: []record{{seq: 1, text: line, at: now}, {seq: 2, text: line, at: now}, {seq: 3, text: line, at: now}}}
	cfg := DefaultConfig()
	cfg.DedupWindow = finding.Duration{Duration: 500 * time.Millisecond}
	cfg.ExpireInterval = finding.Duration{Duration: time.Second}
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t)}, src)
	if err != nil {
		t.Fatal(err)
	}
	got := runCheck(t, c, 2)
	if got[0].Message != line || got[0].Count != 0 {
		t.Errorf("first finding %+v, want the line itself", got[0])
	}
	if got[1].Reason != "NVMeTimeout" || got[1].Count != 2 || !strings.Contains(got[1].Message, "; 2 more times, identical, from ") || got[1].Source != "kmsg seq 3" {
		t.Errorf("summary %+v, want the 2 repeats counted, from the last one's line", got[1])
	}
}
