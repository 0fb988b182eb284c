package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodeguard/nodeguard/internal/testproc"
)

// TestNPDCustomPluginSetsTheNodeCondition: an NPD custom plugin monitor,
// given with --npd-rules as NPD took it, runs scripts that stand in for
// NPD's. A plugin that exits 1 turns its condition True on the real Node,
// with the plugin's stdout as the message, and a Warning event; when it
// exits 0 again the condition goes back to its healthy reason and message.
// A plugin that hangs, with a child that would hang too, is killed with
// its process group at its timeout, and its condition is Unknown saying so.
func TestNPDCustomPluginSetsTheNodeCondition(t *testing.T) {
	needCluster(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "ntp-state")
	setState := func(code int, msg string) {
		t.Helper()
		// Written whole and renamed, so that a run never reads half of it.
		tmp := state + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %s\n", code, msg)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, state); err != nil {
			t.Fatal(err)
		}
	}
	setState(0, "ntp is synchronised")
	writeExec := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ntp := writeExec("check_ntp.sh", `read code msg < "$1"; echo "$msg"; exit "$code"`)
	pids := filepath.Join(dir, "hang-pids")
	hang := writeExec("hang.sh", `sleep 1000 & echo $$ $! >> "$1"; echo still checking; sleep 1000`)
	monitor := filepath.Join(dir, "custom-plugin-monitor.json")
	if err := os.WriteFile(monitor, []byte(fmt.Sprintf(`{
  "plugin": "custom",
  "pluginConfig": {
    "invoke_interval": "500ms",
    "timeout": "5s",
    "max_output_length": 80,
    "concurrency": 3,
    "enable_message_change_based_condition_update": false
  },
  "source": "ntp-custom-plugin-monitor",
  "metricsReporting": true,
  "conditions": [
    {"type": "NTPProblem", "reason": "NTPIsUp", "message": "ntp service is up"},
    {"type": "SlowProbeProblem", "reason": "SlowProbeIsFine", "message": "the slow probe answers"}
  ],
  "rules": [
    {"type": "temporary", "reason": "NTPIsDown", "path": %q, "args": [%q], "timeout": "3s"},
    {"type": "permanent", "condition": "NTPProblem", "reason": "NTPIsDown", "path": %q, "args": [%q], "timeout": "3s"},
    {"type": "permanent", "condition": "SlowProbeProblem", "reason": "SlowProbeFailing", "path": %q, "args": [%q], "timeout": "1s"}
  ]
}`, ntp, state, ntp, state, hang, pids)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killLeftGroups(t, pids) })

	const name = "plugins-node"
	createNode(t, name)
	addr := freeAddr(t)
	startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name,
		"--listen-address="+addr, "--npd-rules="+monitor)...)

	node, _ := waitConditionIs(t, name, "NTPProblem", "False with the healthy reason", 30*time.Second, func(c *corev1.NodeCondition) bool {
		return c.Status == corev1.ConditionFalse && c.Reason == "NTPIsUp"
	})
	if c := condition(node, "NTPProblem"); c.Message != "ntp service is up" {
		t.Errorf("healthy NTPProblem's message %q, want the file's", c.Message)
	}

	setState(1, "NTP service is not running")
	node, took := waitCondition(t, name, "NTPProblem", corev1.ConditionTrue, 15*time.Second)
	if c := condition(node, "NTPProblem"); c.Reason != "NTPIsDown" || c.Message != "NTP service is not running" {
		t.Errorf("NTPProblem True with %s %q, want the rule's reason and the plugin's stdout", c.Reason, c.Message)
	}
	t.Logf("NTPProblem True %s after the plugin began to exit 1", took)
	ev, _ := waitEvent(t, name, "NTPIsDown", "NTP service is not running", 15*time.Second)
	if ev.Type != corev1.EventTypeWarning {
		t.Errorf("NTPIsDown event of type %s, want Warning", ev.Type)
	}
	waitEvent(t, name, "NTPIsDown", "condition NTPProblem is now True (NTPIsDown): NTP service is not running", 15*time.Second)

	setState(0, "ntp is synchronised")
	node, took = waitCondition(t, name, "NTPProblem", corev1.ConditionFalse, 15*time.Second)
	if c := condition(node, "NTPProblem"); c.Reason != "NTPIsUp" || c.Message != "ntp service is up" {
		t.Errorf("NTPProblem False with %s %q, want the file's healthy reason and message", c.Reason, c.Message)
	}
	t.Logf("NTPProblem False %s after the plugin exited 0 again", took)
	waitEvent(t, name, "NTPIsUp", "condition NTPProblem is now False (NTPIsUp): ntp service is up", 15*time.Second)

	node, _ = waitCondition(t, name, "SlowProbeProblem", corev1.ConditionUnknown, 15*time.Second)
	if c := condition(node, "SlowProbeProblem"); c.Reason != "SlowProbeIsFine" || !strings.Contains(c.Message, "timed out after 1s and was killed with its process group") ||
		!strings.Contains(c.Message, "still checking") {
		t.Errorf("SlowProbeProblem Unknown with %s %q, want the healthy reason and the timeout", c.Reason, c.Message)
	}

	// Every run of the hanging plugin but the one going on now is gone,
	// its child with it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		groups := readGroups(t, pids)
		if len(groups) >= 3 {
			var left []string
			for _, g := range groups[:len(groups)-1] {
				if ps := testproc.InGroup(g[0]); len(ps) > 0 {
					left = append(left, fmt.Sprintf("group %d: %v", g[0], ps))
				}
			}
			if len(left) > 0 {
				t.Errorf("runs of the hanging plugin left processes behind: %s", strings.Join(left, "; "))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hanging plugin ran %d times in 10s, want 3 at its 1s timeout", len(groups))
		}
		time.Sleep(100 * time.Millisecond)
	}

	metrics := httpGet(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`nodeguard_plugin_runs_total{monitor="custom-plugin-monitor",result="timeout",rule="2-SlowProbeFailing"}`,
		`nodeguard_plugin_runs_total{monitor="custom-plugin-monitor",result="problem",rule="1-NTPIsDown"}`,
		`nodeguard_plugin_runs_total{monitor="custom-plugin-monitor",result="ok",rule="0-NTPIsDown"}`,
		`nodeguard_plugin_skipped_runs_total{monitor="custom-plugin-monitor",rule="2-SlowProbeFailing"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "nodeguard_plugin_skipped_runs_total") && strings.Contains(l, "2-SlowProbeFailing") && strings.HasSuffix(l, " 0") {
			t.Errorf("a 1s plugin on a 500ms interval skipped no tick: %s", l)
		}
	}
}

// readGroups reads the "pgid child" lines the hanging plugin appends.
func readGroups(t *testing.T, path string) [][]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]int
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var g []int
		for _, f := range strings.Fields(line) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s: %q", path, line)
			}
			g = append(g, n)
		}
		if len(g) == 2 {
			out = append(out, g)
		}
	}
	return out
}

// killLeftGroups kills what a failed test left of the hanging plugin's
// groups.
func killLeftGroups(t *testing.T, path string) {
	for _, g := range readGroups(t, path) {
		if len(testproc.InGroup(g[0])) > 0 {
			_ = syscall.Kill(-g[0], syscall.SIGKILL)
		}
	}
}
