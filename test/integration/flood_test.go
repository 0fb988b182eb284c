package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
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

// TestFloodOfProblemLines: 100,000 OOM kills through the file source. The
// agent stays live with bounded memory; the Node gets ten events, nine and
// one combined counting the rest, not 100,000.
func TestFloodOfProblemLines(t *testing.T) {
	needCluster(t)
	const name = "flood-node"
	createNode(t, name)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "kern.log")
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	config := "checks:\n  kmsg:\n    devKmsg: false\n    files: [{path: " + logFile + "}]\n"
	cmd, _, stderr := startAgent(t, append(onlyCheck(t, "kmsg"), agentArgs(t, t.TempDir(), config,
		"--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, logFile)
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
