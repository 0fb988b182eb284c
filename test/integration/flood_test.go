package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// rssKiB reads a process's resident set from procfs.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// startFileAgent starts an agent of the kmsg check alone for a new Node
// name, reading only an empty kern.log, with kmsg settings and top-level
// config added, and waits until it reads the file. It returns the process,
// the file and the agent's metrics address.
func startFileAgent(t *testing.T, name, kmsgConfig, moreConfig string) (*exec.Cmd, string, string) {
	t.Helper()
	needCluster(t)
	createNode(t, name)
	logFile := filepath.Join(t.TempDir(), "kern.log")
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	config := "checks:\n  kmsg:\n    devKmsg: false\n    files: [{path: " + logFile + "}]\n" + kmsgConfig + moreConfig
	cmd, _, stderr := startAgent(t, append(onlyCheck(t, "kmsg"), agentArgs(t, t.TempDir(), config,
		"--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, logFile)
	return cmd, logFile, addr
}

// TestFloodOfProblemLines: 100,000 OOM kills through the file source. The
// agent stays live with bounded memory; the Node gets ten events, nine and
// one combined counting the rest, not 100,000.
func TestFloodOfProblemLines(t *testing.T) {
	const name = "flood-node"
	cmd, logFile, addr := startFileAgent(t, name, "", "")
	before := rssKiB(t, cmd.Process.Pid)

	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	const lines = 100000
	for i := range lines {
		fmt.Fprintf(w, "Nov 23 10:00:00 node-1 kernel: [%d.000000] Out of memory: Killed process %d (flood) total-vm:1000kB, anon-rss:900kB, file-rss:0kB\n", 1000+i, 10000+i)
	}
	w.Flush()
	f.Close()
	start := time.Now()
	// Every line read: the metric counts each OOMKilling.
	want := fmt.Sprintf(`nodeguard_events_total{reason="OOMKilling"} %d`, lines)
	for !strings.Contains(httpGet(t, "http://"+addr+"/metrics"), want) {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("the agent had not read %d lines after 60 s", lines)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	after := rssKiB(t, cmd.Process.Pid)
	t.Logf("%d problem lines in %s; RSS %d KiB before, %d KiB after (race-detector build)", lines, took.Round(time.Millisecond), before, after)
	if got := httpGet(t, "http://"+addr+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz after the flood = %q", got)
	}
	metrics := httpGet(t, "http://"+addr+"/metrics")
	// One event's repeats are aggregated: the spool never fills.
	if strings.Contains(metrics, `nodeguard_events_suppressed_total{reason="OOMKilling"}`) {
		t.Error("events suppressed in a flood of one reason, which aggregation should hold in a few records")
	}
	// Memory: a race-detector build costs several times a plain one, so the
	// bound is loose; what matters is that it does not grow with the lines.
	if after-before > 150*1024 {
		t.Errorf("RSS grew by %d KiB over the flood", after-before)
	}
	// As client-go's recorder aggregates: nine events, then one combined
	// event whose count takes every other kill. Its last count waits for
	// a token of the rate limit (one per 30 s once the burst is spent).
	deadline := time.Now().Add(90 * time.Second)
	n := countEvents(t, name, "OOMKilling")
	for n < lines && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		n = countEvents(t, name, "OOMKilling")
	}
	objects := len(listEvents(t, name, "OOMKilling"))
	if objects > 10 || n != lines {
		t.Errorf("%d OOMKilling events on the Node counting %d kills after %d lines, want at most 10 (nine and one combined) counting all of them", objects, n, lines)
	}
	t.Logf("%d OOMKilling events reached the Node, counting %d kills", objects, n)
}

// TestFloodStormAndReasonBudget: a storm of one identical line and a flood
// of one reason over its hourly budget, through the real API server. The
// storm is two events on the Node (its first line and its summary) and the
// budget holds the reason to its number; the metrics count every line, and
// what the budget held back, so nothing is lost silently.
func TestFloodStormAndReasonBudget(t *testing.T) {
	const name = "storm-node"
	_, logFile, addr := startFileAgent(t, name, "    dedupWindow: 3s\n    expireInterval: 1s\n",
		"reporter:\n  reasons:\n    IOError:\n      eventsPerHour: 3\n")

	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	const storm, ioErrors = 20000, 40
	for i := range storm {
		fmt.Fprintf(w, "Nov 23 10:00:00 node-1 kernel: [%d.%06d] nvme nvme0: I/O 512 QID 3 timeout, aborting\n", 1000+i/1000, i%1000)
	}
	for i := range ioErrors {
		fmt.Fprintf(w, "Nov 23 10:00:01 node-1 kernel: [2000.%06d] blk_update_request: I/O error, dev sdb, sector %d\n", i, 8*i)
	}
	w.Flush()
	f.Close()

	// The storm's repeats are counted when its window (3 s) ends.
	start := time.Now()
	wants := []string{
		fmt.Sprintf(`nodeguard_events_total{reason="NVMeTimeout"} %d`, storm),
		fmt.Sprintf(`nodeguard_events_total{reason="IOError"} %d`, ioErrors),
		fmt.Sprintf(`nodeguard_events_suppressed_total{reason="IOError"} %d`, ioErrors-3),
	}
	for {
		metrics := httpGet(t, "http://"+addr+"/metrics")
		missing := ""
		for _, want := range wants {
			if !strings.Contains(metrics, want) {
				missing = want
			}
		}
		if missing == "" {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("after 60 s the metrics lack %s", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d storm lines and %d I/O errors counted %s after the write", storm, ioErrors, time.Since(start).Round(time.Millisecond))

	// Events reach the Node asynchronously; wait for the storm's two.
	var nvme []corev1.Event
	for deadline := time.Now().Add(30 * time.Second); ; {
		nvme = listEvents(t, name, "NVMeTimeout")
		if len(nvme) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var messages []string
	for _, e := range nvme {
		messages = append(messages, e.Message)
	}
	summary := fmt.Sprintf("; %d more times, identical, from ", storm-1)
	if len(nvme) != 2 || !slices.ContainsFunc(messages, func(m string) bool { return strings.Contains(m, summary) }) {
		t.Errorf("NVMeTimeout events on the Node: %q; want the storm's first line and its summary naming %d more", messages, storm-1)
	}
	if n := countEvents(t, name, "IOError"); n != 3 {
		t.Errorf("%d IOError events on the Node, want the reason's budget, 3", n)
	}
}
