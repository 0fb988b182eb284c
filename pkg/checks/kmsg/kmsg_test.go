package kmsg

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// feedSource hands the check records the test chooses, then waits.
type feedSource struct{ records []Record }

func (s feedSource) Run(ctx context.Context, after int, out chan<- Record) error {
	for _, r := range s.records {
		if int(r.Seq) <= after {
			continue
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return nil
		}
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
	src := feedSource{records: []Record{
		{Seq: 1, Message: "eth0: renamed from veth1234", Received: now},
		{Seq: 2, Message: "INFO: task kubelet:881 blocked for more than 120 seconds.", Received: now},
		{Seq: 3, Message: "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/burstable/pod0d1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8,task_memcg=/kubepods/burstable/pod0d1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8/" + strings.Repeat("ab", 32) + ",task=java,pid=4242,uid=0", Received: now},
		{Seq: 4, Message: "Memory cgroup out of memory: Killed process 4242 (java) total-vm:100kB, anon-rss:90kB", Received: now},
	}}
	c, err := New(DefaultConfig(), checks.Env{Log: zaptest.NewLogger(t)}, src)
	if err != nil {
		t.Fatal(err)
	}
	got := runCheck(t, c, 3)
	if got[0].Reason != "TaskHung" || got[1].Type != "KernelDeadlock" || got[1].Status != finding.StatusTrue {
		t.Errorf("hung kubelet gave %+v and %+v, want a TaskHung event and KernelDeadlock=True", got[0], got[1])
	}
	oom := got[2]
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
	src := feedSource{records: []Record{
		{Seq: 1, Message: "INFO: task dd:881 blocked for more than 120 seconds.", Received: time.Now()},
		{Seq: 2, Message: "frobnicator jammed on bus 3", Received: time.Now()},
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

// TestDevKmsgDeliversRealRecords writes to the real kernel log and reads it
// back through go-kmsg-parser.
func TestDevKmsgDeliversRealRecords(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes to /dev/kmsg")
	}
	reg := prometheus.NewRegistry()
	src := &devKmsg{log: zaptest.NewLogger(t), metrics: newSourceMetrics(reg), now: time.Now, startAtEnd: true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan Record, 64)
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, -1, out) }()
	time.Sleep(300 * time.Millisecond) // let it open and seek to the end
	marker := fmt.Sprintf("nodeguard-kmsg-test-%d", rand.Int64())
	if err := os.WriteFile("/dev/kmsg", []byte("<2>"+marker+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-out:
			if r.Message != marker {
				continue
			}
			if r.Priority != 2 {
				t.Errorf("priority %d, want 2 (facility stripped)", r.Priority)
			}
			if time.Since(r.Received) > 5*time.Second || r.Seq == 0 {
				t.Errorf("record %+v: want a receive time of now and a sequence number", r)
			}
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("source returned %v on shutdown, want nil", err)
			}
			if testutil.ToFloat64(src.metrics.records) < 1 {
				t.Error("records metric not counted")
			}
			return
		case err := <-errc:
			t.Fatalf("source stopped: %v", err)
		case <-deadline:
			t.Fatalf("record %q not read back from /dev/kmsg", marker)
		}
	}
}

func TestRestartResumesAfterLastReportedRecordInTheSameBoot(t *testing.T) {
	proc := t.TempDir()
	bootFile := proc + "/sys/kernel/random/boot_id"
	os.MkdirAll(proc+"/sys/kernel/random", 0o755)
	hung := func(seq uint64) Record {
		return Record{Seq: seq, Message: fmt.Sprintf("INFO: task dd:%d blocked for more than 120 seconds.", seq), Received: time.Now()}
	}
	old := hung(9)
	old.Received = time.Now().Add(-time.Hour) // before the backlog lookback
	src := feedSource{records: []Record{old, hung(10), hung(11)}}
	state := t.TempDir()
	env := checks.Env{Log: zaptest.NewLogger(t), StateDir: state, ProcPath: proc}

	tests := []struct {
		bootID string
		want   []string // TaskHung messages' pids, in order
	}{
		{"boot-a", []string{"dd:10", "dd:11"}}, // first start: all records of this boot
		{"boot-a", nil},                        // restart in the same boot: nothing again
		{"boot-b", []string{"dd:10", "dd:11"}}, // a new boot: sequence numbers start over
	}
	for i, tt := range tests {
		os.WriteFile(bootFile, []byte(tt.bootID+"\n"), 0o644)
		c, err := New(DefaultConfig(), env, src)
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
	src := feedSource{records: []Record{
		{Seq: 1, Message: "INFO: task containerd:870 blocked for more than 120 seconds.", Received: now},
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

// go-kmsg-parser reports an overrun (EPIPE: the ring buffer wrapped past the
// reader) only through its logger's Warningf; that is what is counted.
func TestParserLoggerCountsOverruns(t *testing.T) {
	m := newSourceMetrics(prometheus.NewRegistry())
	l := parserLogger{log: zaptest.NewLogger(t), overruns: m.overruns}
	l.Warningf("short read from kmsg; skipping")
	l.Warningf("something else")
	l.Infof("info %d", 1)
	if got := testutil.ToFloat64(m.overruns); got != 1 {
		t.Errorf("overruns counted %v, want 1", got)
	}
}

func TestKernelRulesReadOnlyTheKernelLog(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rules = []logrules.Rule{{Name: "x", Source: "journald:kubelet.service", Kind: finding.KindEvent, Reason: "X", Pattern: "x"}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "rules[0].source") {
		t.Errorf("Validate = %v, want an error naming rules[0].source", err)
	}
}
