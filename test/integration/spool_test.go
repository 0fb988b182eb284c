package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/nodeguard/nodeguard/internal/testcluster"
)

// spoolProblems are ten kinds of kernel problem, each made distinct by a
// number; five of each stay under client-go's aggregation (nine similar
// messages a reason), so that every one is its own Event.
var spoolProblems = []struct{ reason, line string }{
	{"TaskHung", "INFO: task spool:%d blocked for more than 120 seconds."},
	{"NetdevTxTimeout", "NETDEV WATCHDOG: sp%d (ixgbe): transmit queue 2 timed out"},
	{"IOError", "blk_update_request: I/O error, dev sdq, sector %d op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0"},
	{"UnregisterNetDevice", "unregister_netdevice: waiting for sp%d to become free. Usage count = 1"},
	{"GPUXid", "NVRM: Xid (PCI:0000:3b:00): 79, pid=%d, GPU has fallen off the bus."},
	{"NVMeTimeout", "nvme nvme0: I/O %d QID 5 timeout, aborting"},
	{"Ext4Warning", "EXT4-fs warning (device sdq1): ext4_dx_add_entry:2351: inode #%d: comm spool: Directory index full!"},
	{"Ext4Error", "EXT4-fs error (device sdq1): ext4_find_entry:1455: inode #%d: comm ls: reading directory lblock 0"},
	{"MemoryHardwareError", "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0 (channel:0 slot:0 page:0x%d offset:0x0 grain:32 syndrome:0x0)"},
	{"XFSError", "XFS (sdq1): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x%d len 8 error 5"},
}

// spoolRun is one node's agent reading kernel problems from a file of its
// own (never /dev/kmsg, which other tests on the machine read), with a
// state directory that outlives each agent process.
type spoolRun struct {
	node, logFile, state, addr string
	args                       []string
	// base numbers this run's problems, so that no other run's match.
	base int
}

// newSpoolRun prepares a run. The event rate limit is one a second (burst
// 25) rather than the default one per 30 s, so that 50 events drain in
// about half a minute, not 12.5 minutes; the spool holds spoolSize.
func newSpoolRun(t *testing.T, node string, spoolSize int) *spoolRun {
	t.Helper()
	createNode(t, node)
	dir := t.TempDir()
	r := &spoolRun{node: node, logFile: filepath.Join(dir, "kern.log"), state: filepath.Join(dir, "state"),
		addr: freeAddr(t), base: 100000 + rand.IntN(800000)}
	if err := os.WriteFile(r.logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// No evidence: its EvidenceCaptured events share the spool, and the
	// tests count records to know when the agent has read each problem
	// (a file has no cursor, so a line read by no agent before a kill -9
	// is never read): 24 problems and an EvidenceCaptured read as 25.
	config := fmt.Sprintf("keepStartupPages: true\nevidence: {enabled: false}\nreporter:\n  eventQPS: 1\n  eventBurst: 25\n  eventSpoolSize: %d\nchecks:\n  kmsg:\n    devKmsg: false\n    files: [{path: %s}]\n",
		spoolSize, r.logFile)
	r.args = append(onlyCheck(t, "kmsg"), agentArgs(t, r.state, config,
		"--kubeconfig="+cluster.Kubeconfig, "--node-name="+node, "--listen-address="+r.addr)...)
	return r
}

// start runs an agent and waits until it follows the file.
func (r *spoolRun) start(t *testing.T) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd, _, stderr := startAgent(t, r.args...)
	waitReading(t, stderr, r.logFile)
	return cmd, stderr
}

// kill ends an agent with SIGKILL.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// problem is the ID and line of the run's i-th problem.
func (r *spoolRun) problem(i int) (string, string) {
	id := r.base + i
	return strconv.Itoa(id), fmt.Sprintf(spoolProblems[i%len(spoolProblems)].line, id)
}

// write appends problems from to to-1 to the file, every apart, and
// returns when each was written.
func (r *spoolRun) write(t *testing.T, from, to int, every time.Duration) map[string]time.Time {
	t.Helper()
	at := map[string]time.Time{}
	f, err := os.OpenFile(r.logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := from; i < to; i++ {
		id, line := r.problem(i)
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
		at[id] = time.Now()
		time.Sleep(every)
	}
	return at
}

// delivered lists the run's problem events on the Node by ID.
func (r *spoolRun) delivered(t *testing.T) map[string][]corev1.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sel := fields.OneTermEqualSelector("involvedObject.name", r.node).String()
	list, err := cluster.Client.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Logf("listing events: %v", err)
		return nil
	}
	out := map[string][]corev1.Event{}
	for _, ev := range list.Items {
		for i := range 1000 {
			id, _ := r.problem(i)
			if strings.Contains(ev.Message, id) {
				out[id] = append(out[id], ev)
				break
			}
		}
	}
	return out
}

// waitDelivered waits until n of the run's problems are on the Node.
func (r *spoolRun) waitDelivered(t *testing.T, n int, within time.Duration) (map[string][]corev1.Event, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		got := r.delivered(t)
		if len(got) >= n {
			return got, time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%d of the run's problems on the Node after %s, want %d", len(got), within, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// metric is the value of a series in the agent's /metrics, or -1 when it
// is not there (or the agent does not answer).
func (r *spoolRun) metric(series string) float64 {
	page, err := tryHTTPGet("http://" + r.addr + "/metrics")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// waitMetric waits for a series to reach want.
func (r *spoolRun) waitMetric(t *testing.T, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.metric(series) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 30 s, want %v", series, r.metric(series), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopAPIServer stops the server until the returned function starts it
// again; a test that fails meanwhile still gets it back.
func stopAPIServer(t *testing.T, c *testcluster.Cluster) (start func()) {
	t.Helper()
	up := false
	t.Cleanup(func() {
		if !up {
			c.StartAPIServer()
		}
	})
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := c.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		up = true
	}
}

// checkOnce fails for each of want's IDs not on the Node exactly once,
// with a count of 1.
func checkOnce(t *testing.T, got map[string][]corev1.Event, want int) {
	t.Helper()
	if len(got) != want {
		t.Errorf("%d distinct problems on the Node, want %d", len(got), want)
	}
	for id, evs := range got {
		if len(evs) != 1 || evs[0].Count != 1 {
			var counts []int32
			for _, ev := range evs {
				counts = append(counts, ev.Count)
			}
			t.Errorf("problem %s: %d events with counts %v, want one event counted once", id, len(evs), counts)
		}
	}
}

// spoolOutage is how long the API server stays down in
// TestEventsOfAnAPIServerOutageReachTheNode: 60 s by default, so that
// `make test` stays short; NODEGUARD_SPOOL_OUTAGE=10m runs the ten
// minutes (any Go duration).
func spoolOutage(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("NODEGUARD_SPOOL_OUTAGE")
	if v == "" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 20*time.Second {
		t.Fatalf("NODEGUARD_SPOOL_OUTAGE=%q: want a duration of at least 20s", v)
	}
	return d
}

// 50 kernel problems while the API server is down: after its return all
// 50 are on the Node, each once, with the time it happened, within what
// the rate limit allows, and the agent's memory stays flat.
func TestEventsOfAnAPIServerOutageReachTheNode(t *testing.T) {
	c := needCluster(t)
	outage := spoolOutage(t)
	r := newSpoolRun(t, "spool-outage-node", 1000)
	cmd, _ := r.start(t)
	waitCondition(t, r.node, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	rssBefore, heapBefore := rssKiB(t, cmd.Process.Pid), r.metric("go_memstats_heap_inuse_bytes")/1024

	start := stopAPIServer(t, c)
	down := time.Now()
	// Spread over the outage but its last 10 s.
	written := r.write(t, 0, 50, (outage-10*time.Second)/50)
	r.waitMetric(t, "nodeguard_event_spool_records", 50)
	rssDuring, heapDuring := rssKiB(t, cmd.Process.Pid), r.metric("go_memstats_heap_inuse_bytes")/1024
	if files, err := os.ReadDir(filepath.Join(r.state, "events")); err != nil || len(files) != 50 {
		t.Errorf("spool files during the outage: %d (%v), want 50", len(files), err)
	}
	time.Sleep(time.Until(down.Add(outage)))
	start()
	back := time.Now()

	// Burst 25, then one a second: about 25 s, plus the agent's backoff
	// (up to 10 s) before its first try after the return.
	got, took := r.waitDelivered(t, 50, 3*time.Minute)
	rssAfter, heapAfter := rssKiB(t, cmd.Process.Pid), r.metric("go_memstats_heap_inuse_bytes")/1024
	t.Logf("API server down %s; 50 problems spooled; all on the Node %s after its return; agent RSS %d KiB before, %d with the spool full, %d after; Go heap in use %.0f, %.0f, %.0f KiB (race-detector build)",
		back.Sub(down).Round(time.Second), took.Round(100*time.Millisecond), rssBefore, rssDuring, rssAfter, heapBefore, heapDuring, heapAfter)
	checkOnce(t, got, 50)
	var late []string
	for id, evs := range got {
		ev, at := evs[0], written[id]
		// Event times are whole seconds; the file is read within 250 ms.
		if first := ev.FirstTimestamp.Time; first.Before(at.Add(-time.Second).Truncate(time.Second)) || first.After(at.Add(2*time.Second)) || !first.Before(back) {
			late = append(late, fmt.Sprintf("%s at %s, first %s", id, at.Format(time.TimeOnly), first.Format(time.TimeOnly)))
		}
		if !ev.LastTimestamp.Equal(&ev.FirstTimestamp) {
			t.Errorf("problem %s: last %s, want its first time %s", id, ev.LastTimestamp, ev.FirstTimestamp)
		}
	}
	sort.Strings(late)
	if len(late) > 0 {
		t.Errorf("events without the time they happened: %s", strings.Join(late, "; "))
	}
	if took > 90*time.Second {
		t.Errorf("all 50 took %s after the return, want the rate limit's ~25 s plus a backoff", took)
	}
	// The outage itself, reported once the server answers.
	waitEvent(t, r.node, "APIServerUnreachable", "could not reach the API server", 30*time.Second)
	r.waitMetric(t, "nodeguard_event_spool_records", 0)
	if files, _ := os.ReadDir(filepath.Join(r.state, "events")); len(files) != 0 {
		t.Errorf("%d spool files left after delivery", len(files))
	}
	if rssAfter-rssBefore > 50*1024 {
		t.Errorf("RSS grew by %d KiB", rssAfter-rssBefore)
	}
}

// The agent killed with -9 during the outage and again while it drains
// its spool: all 50 problems reach the Node, none twice.
func TestEventsSpooledAcrossKillNineAreSentOnce(t *testing.T) {
	c := needCluster(t)
	r := newSpoolRun(t, "spool-kill-node", 1000)
	first, _ := r.start(t)
	waitCondition(t, r.node, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)

	start := stopAPIServer(t, c)
	r.write(t, 0, 25, 100*time.Millisecond)
	r.waitMetric(t, "nodeguard_event_spool_records", 25)
	kill(t, first)
	// The next agent starts with the server still down: it loads the
	// spool, and follows the file for the rest.
	second, stderr := r.start(t)
	r.waitMetric(t, "nodeguard_event_spool_records", 25)
	waitLogged(t, stderr, "events left in the spool by the last agent will be sent", `"events":25`)
	r.write(t, 25, 50, 100*time.Millisecond)
	r.waitMetric(t, "nodeguard_event_spool_records", 50)
	start()

	// Killed again part way through the drain (the burst of 25 goes out
	// in seconds, then one a second), maybe between a write and the
	// removal of its file.
	part, _ := r.waitDelivered(t, 30, 2*time.Minute)
	kill(t, second)
	t.Logf("second agent killed with %d of 50 on the Node", len(part))
	_, third := r.start(t)
	_, took := r.waitDelivered(t, 50, 2*time.Minute)
	t.Logf("all 50 on the Node %s after the third agent started; %d of them found already sent by the second (killed between the write and the file's removal)",
		took.Round(100*time.Millisecond), strings.Count(third.String(), "the event was on the API server already"))
	// Anything sent twice would show by now: the spool is empty.
	r.waitMetric(t, "nodeguard_event_spool_records", 0)
	checkOnce(t, r.delivered(t), 50)
}

// A spool filled past its cap during an outage: what it had no room for is
// counted per reason in the metric and summarised in one event.
func TestSpoolOverflowIsCountedAndSummarised(t *testing.T) {
	c := needCluster(t)
	r := newSpoolRun(t, "spool-overflow-node", 10)
	r.start(t)
	waitCondition(t, r.node, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	start := stopAPIServer(t, c)
	// 30 problems, three of each kind: the spool keeps the first ten.
	r.write(t, 0, 30, 50*time.Millisecond)
	r.waitMetric(t, "nodeguard_event_spool_records", 11) // and the summary
	for _, p := range spoolProblems {
		r.waitMetric(t, fmt.Sprintf(`nodeguard_events_suppressed_total{reason=%q}`, p.reason), 2)
	}
	start()
	got, _ := r.waitDelivered(t, 10, 2*time.Minute)
	checkOnce(t, got, 10)
	ev, _ := waitEvent(t, r.node, "EventsSuppressed", "20 events were not sent", time.Minute)
	for _, p := range spoolProblems {
		if !strings.Contains(ev.Message, p.reason+" x2") {
			t.Errorf("summary %q does not count %s x2", ev.Message, p.reason)
		}
	}
	time.Sleep(3 * time.Second)
	if n := len(listEvents(t, r.node, "EventsSuppressed")); n != 1 {
		t.Errorf("%d EventsSuppressed events, want one", n)
	}
	t.Logf("summary: %s", ev.Message)
}

// Spool files a crash or a bad disk left unreadable (one truncated, one
// garbage) are skipped and counted; the agent starts and sends the rest.
func TestCorruptSpoolFilesAreSkippedAndCounted(t *testing.T) {
	c := needCluster(t)
	r := newSpoolRun(t, "spool-corrupt-node", 1000)
	start := stopAPIServer(t, c)
	first, _ := r.start(t)
	r.write(t, 0, 3, 100*time.Millisecond)
	r.waitMetric(t, "nodeguard_event_spool_records", 3)
	kill(t, first)

	dir := filepath.Join(r.state, "events")
	files, err := os.ReadDir(dir)
	if err != nil || len(files) != 3 {
		t.Fatalf("spool files: %d (%v), want 3", len(files), err)
	}
	truncated := filepath.Join(dir, files[1].Name())
	b, err := os.ReadFile(truncated)
	if err != nil {
		t.Fatal(err)
	}
	// Which problem it held: a multi-line report (a hung task's) is
	// found only when it ends, so files need not be in the lines' order.
	cut := ""
	for i := range 3 {
		if id, _ := r.problem(i); strings.Contains(string(b), id) {
			cut = id
		}
	}
	if err := os.WriteFile(truncated, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00000000000000ff.json"), []byte("\x00\x17garbage\xff"), 0o600); err != nil {
		t.Fatal(err)
	}
	start()
	_, stderr := r.start(t)
	r.waitMetric(t, "nodeguard_event_spool_corrupt_files_total", 2)
	waitLogged(t, stderr, "skipped a spool file that is not a whole record")
	got, _ := r.waitDelivered(t, 2, time.Minute)
	checkOnce(t, got, 2)
	if got[cut] != nil {
		t.Errorf("the truncated record's problem %s reached the Node", cut)
	}
	if body, err := tryHTTPGet("http://" + r.addr + "/healthz"); err != nil || body != "ok\n" {
		t.Errorf("/healthz = %q, %v", body, err)
	}
	r.waitMetric(t, "nodeguard_event_spool_records", 0)
}

// NodeguardDegraded (reportDegraded) goes True when the kernel log cannot be
// read, and False once it can again. The test runs as root, whom no file
// mode stops, so the log file is made unreadable by putting a directory in
// its place: every read fails (EISDIR), the kmsg check fails at each
// restart, and once it has been down past the supervisor's longest backoff
// (2 minutes) the agent says so.
func TestDegradedWhileTheKernelLogCannotBeRead(t *testing.T) {
	needCluster(t)
	const name = "degraded-node"
	createNode(t, name)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "kern.log")
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	config := "reportDegraded: true\nchecks:\n  kmsg:\n    devKmsg: false\n    files: [{path: " + logFile + "}]\n"
	_, _, stderr := startAgent(t, append(onlyCheck(t, "kmsg"), agentArgs(t, t.TempDir(), config,
		"--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)...)
	waitCondition(t, name, "NodeguardDegraded", corev1.ConditionFalse, 30*time.Second)
	waitReading(t, stderr, logFile)

	if err := os.Remove(logFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(logFile, 0o755); err != nil {
		t.Fatal(err)
	}
	node, took := waitCondition(t, name, "NodeguardDegraded", corev1.ConditionTrue, 5*time.Minute)
	t.Logf("NodeguardDegraded True %s after the kernel log became unreadable: %s", took.Round(time.Second), condition(node, "NodeguardDegraded").Message)
	if msg := condition(node, "NodeguardDegraded").Message; !strings.Contains(msg, "kmsg") {
		t.Errorf("message %q does not name the kmsg check", msg)
	}

	if err := os.Remove(logFile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The next restart (the backoff is up to 2 minutes by now) reads it,
	// and a check counts as up after a minute's run.
	_, took = waitCondition(t, name, "NodeguardDegraded", corev1.ConditionFalse, 5*time.Minute)
	t.Logf("NodeguardDegraded False %s after the kernel log could be read again", took.Round(time.Second))
}
