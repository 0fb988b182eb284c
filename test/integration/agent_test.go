package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// syncBuffer is a bytes.Buffer safe for a process writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freshStart is a config under which the agent ignores what the kernel
// logged before it started, so that earlier tests' records do not leak in.
const freshStart = "checks:\n  kmsg:\n    startAtEnd: true\n"

// agentArgs gives the agent a state directory of the test's own and, unless
// config is empty, a config file holding config.
func agentArgs(t *testing.T, stateDir, config string, args ...string) []string {
	t.Helper()
	args = append(args, "--state-dir="+stateDir)
	if config != "" {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config="+path)
	}
	return args
}

// startAgent runs the real nodeguard binary and stops it when the test ends.
func startAgent(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	return startProcess(t, needAgent(t), args...)
}

// startProcess runs a program, keeping what it prints, and kills it when the
// test ends.
func startProcess(t *testing.T, path string, args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(path), stderr.String())
		}
	})
	return cmd, &stdout, &stderr
}

// waitReading waits until the agent says it is reading the kernel log from
// source (/dev/kmsg or a file's path), so that a record written next is read
// and not skipped as already there when the agent began. The agent's
// conditions are on the node before then, so they cannot tell.
func waitReading(t *testing.T, stderr *syncBuffer, source string) {
	t.Helper()
	waitLogged(t, stderr, "reading the kernel log", fmt.Sprintf(`"source":%q`, source))
}

// waitLogged waits for a line of the agent's JSON log with message msg and
// holding each of fields.
func waitLogged(t *testing.T, stderr *syncBuffer, msg string, fields ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
	lines:
		for _, line := range strings.Split(stderr.String(), "\n") {
			if !strings.Contains(line, fmt.Sprintf(`"msg":%q`, msg)) {
				continue
			}
			for _, f := range fields {
				if !strings.Contains(line, f) {
					continue lines
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not log %q with %q within 20 s", msg, fields)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeKmsg writes one record to the real kernel log. The kernel drops
// writes from a user that come too fast, so callers space them 50 ms apart.
func writeKmsg(t *testing.T, line string) {
	t.Helper()
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("opening /dev/kmsg: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		t.Fatalf("writing /dev/kmsg: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
}

func TestKmsgRecordBecomesEventAndCondition(t *testing.T) {
	needCluster(t)
	needRoot(t, "writes records to /dev/kmsg")
	const name = "kmsg-node"
	createNode(t, name)
	state := t.TempDir()
	cmd, _, stderr := startAgent(t, agentArgs(t, state, freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, "/dev/kmsg")

	pid := 100000 + rand.IntN(800000)
	writeKmsg(t, fmt.Sprintf("<3>INFO: task containerd:%d blocked for more than 120 seconds.\n", pid))
	marker := fmt.Sprintf("containerd:%d", pid)
	_, took := waitEvent(t, name, "TaskHung", marker, 15*time.Second)
	t.Logf("TaskHung event on the node %s after the kmsg write", took)
	node, took := waitCondition(t, name, "KernelDeadlock", corev1.ConditionTrue, 15*time.Second)
	t.Logf("KernelDeadlock True on the node %s after the kmsg write", took)
	if c := condition(node, "KernelDeadlock"); !strings.Contains(c.Message, marker) || c.Reason != "ContainerRuntimeHung" {
		t.Errorf("KernelDeadlock = %s %q, want reason ContainerRuntimeHung and a message naming %s", c.Reason, c.Message, marker)
	}
	// The kmsg rule runtime-task-hung raises the cri check's condition too.
	node, _ = waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionTrue, 15*time.Second)
	if c := condition(node, "ContainerRuntimeUnresponsive"); !strings.Contains(c.Message, marker) || c.Reason != "RuntimeTaskHung" {
		t.Errorf("ContainerRuntimeUnresponsive = %s %q, want reason RuntimeTaskHung and a message naming %s", c.Reason, c.Message, marker)
	}

	// What an SRE reads: kubectl describe node shows both.
	out, err := cluster.Kubectl(context.Background(), "describe", "node", name)
	if err != nil {
		t.Fatalf("kubectl describe node: %v\n%s", err, out)
	}
	for _, want := range []string{"KernelDeadlock", "ContainerRuntimeHung", "TaskHung", marker} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl describe node lacks %q:\n%s", want, out)
		}
	}

	// SIGTERM: the agent stops within 5 s.
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM", err)
		}
		t.Logf("agent stopped %s after SIGTERM", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatalf("agent still running 5 s after SIGTERM; stderr:\n%s", stderr.String())
	}

	// A restarted agent keeps the condition True: the boot has not changed.
	// Its metrics say so too, once it has read the Node, so that alerts on
	// them do not resolve with the problem still there.
	addr := freeAddr(t)
	startAgent(t, agentArgs(t, state, freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)
	const trueMetric = `nodeguard_condition{condition="KernelDeadlock",status="True"} 1`
	metricSeen := false
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) || !metricSeen {
		node, err := cluster.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c := condition(node, "KernelDeadlock"); c == nil || c.Status != corev1.ConditionTrue {
			t.Fatalf("after the restart KernelDeadlock is %+v, want it still True", c)
		}
		if m, err := tryHTTPGet("http://" + addr + "/metrics"); err == nil && strings.Contains(m, trueMetric) {
			metricSeen = true
		}
		if time.Now().After(deadline.Add(15 * time.Second)) {
			t.Fatalf("after the restart /metrics lacks %s while the Node holds KernelDeadlock True", trueMetric)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestStandalonePrintsKmsgFindings(t *testing.T) {
	needRoot(t, "writes records to /dev/kmsg")
	addr := freeAddr(t)
	_, stdout, stderr := startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--standalone", "--output=json", "--listen-address="+addr)...)
	waitReading(t, stderr, "/dev/kmsg")
	pid := 100000 + rand.IntN(800000)
	writeKmsg(t, fmt.Sprintf("<4>Out of memory: Killed process %d (standalone-test) total-vm:1000kB, anon-rss:900kB, file-rss:0kB\n", pid))
	want := fmt.Sprintf(`"reason":"OOMKilling","message":"Out of memory: Killed process %d (standalone-test)`, pid)
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(stdout.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("standalone agent did not print %s; stdout:\n%s", want, stdout.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	metrics := httpGet(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`nodeguard_events_total{reason="OOMKilling"}`,
		`nodeguard_condition{condition="KernelDeadlock",status="False"} 1`,
		`nodeguard_check_runs_total{check="kmsg"} 1`,
		`nodeguard_kmsg_records_total`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if got := httpGet(t, "http://"+addr+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q, want ok", got)
	}
}

// TestKillNineNeitherRepeatsNorLosesKernelRecords: the agent remembers the
// last kernel record it reported in this boot.
func TestKillNineNeitherRepeatsNorLosesKernelRecords(t *testing.T) {
	needCluster(t)
	needRoot(t, "writes records to /dev/kmsg")
	const name = "restart-node"
	createNode(t, name)
	state := t.TempDir()
	// startAtEnd keeps other tests' records out of the first start; the
	// restart resumes from the saved position all the same.
	args := agentArgs(t, state, freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")
	first, _, stderr := startAgent(t, args...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, "/dev/kmsg")

	before := fmt.Sprintf("restart-test-before-%d", rand.Int64())
	writeKmsg(t, "<3>NETDEV WATCHDOG: "+before+" (ixgbe): transmit queue 2 timed out\n")
	waitEvent(t, name, "NetdevTxTimeout", before, 15*time.Second)
	first.Process.Kill()
	first.Wait()

	during := fmt.Sprintf("restart-test-during-%d", rand.Int64())
	writeKmsg(t, "<3>NETDEV WATCHDOG: "+during+" (ixgbe): transmit queue 2 timed out\n")
	startAgent(t, args...)
	_, took := waitEvent(t, name, "NetdevTxTimeout", during, 10*time.Second)
	t.Logf("record logged while the agent was down reported %s after the restart", took)
	time.Sleep(2 * time.Second)
	list, err := cluster.Client.CoreV1().Events(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int32{}
	for _, e := range list.Items {
		for _, m := range []string{before, during} {
			if e.InvolvedObject.Name == name && strings.Contains(e.Message, m) {
				counts[m] += e.Count
			}
		}
	}
	if counts[before] != 1 || counts[during] != 1 {
		t.Errorf("events per record %v, want exactly 1 each (no repeat after kill -9, nothing lost while down)", counts)
	}
}

// TestLogConditionLeftTrueClearsAfterARestart: a condition that a log rule
// clears after a quiet period, left True on the Node by an agent that then
// restarted. The new agent keeps it True (no flap on restart), and clears
// it once the quiet period passes with no matching line, as the old agent
// would have; before, nothing cleared it until a reboot.
func TestLogConditionLeftTrueClearsAfterARestart(t *testing.T) {
	needCluster(t)
	const name = "quiet-node"
	node := createNode(t, name)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{
		Type: "NFSServerUnresponsive", Status: corev1.ConditionTrue, Reason: "NFSServerNotResponding",
		Message: "nfs: server filer1 not responding, still trying", LastHeartbeatTime: now, LastTransitionTime: now,
	})
	if _, err := cluster.Client.CoreV1().Nodes().UpdateStatus(context.Background(), node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	config := freshStart + `    expireInterval: 1s
    conditions:
      - type: NFSServerUnresponsive
        reason: NFSServersResponding
        message: every NFS server answers
    rules:
      - name: nfs-not-responding
        kind: condition
        condition: NFSServerUnresponsive
        reason: NFSServerNotResponding
        pattern: 'nfs: server \S+ not responding'
        clearAfter: 5s
`
	started := time.Now()
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	// Kept True at start: the agent writes its other conditions first.
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	got, err := cluster.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := condition(got, "NFSServerUnresponsive"); time.Since(started) < 5*time.Second && (c == nil || c.Status != corev1.ConditionTrue) {
		t.Errorf("NFSServerUnresponsive right after the restart = %+v, want still True", c)
	}
	got, took := waitCondition(t, name, "NFSServerUnresponsive", corev1.ConditionFalse, 30*time.Second)
	t.Logf("NFSServerUnresponsive False %s into the wait, %s after the agent started", took, time.Since(started).Round(time.Millisecond))
	if c := condition(got, "NFSServerUnresponsive"); c.Reason != "NFSServersResponding" || c.Message != "every NFS server answers" {
		t.Errorf("cleared to %s %q, want the healthy default", c.Reason, c.Message)
	}
}

// TestPanicBeforeThisBootIsReportedOnce: a crash record in pstore becomes one
// KernelPanic event, and a restarted agent does not report it again.
func TestPanicBeforeThisBootIsReportedOnce(t *testing.T) {
	needCluster(t)
	const name = "pstore-node"
	createNode(t, name)
	pstore := t.TempDir()
	marker := fmt.Sprintf("Attempted to kill init! exitcode=0x%08x", rand.Uint32())
	record := "Panic#1 Part1\n<0>[ 3315.224010] Kernel panic - not syncing: " + marker + "\n"
	if err := os.WriteFile(filepath.Join(pstore, "dmesg-ramoops-0"), []byte(record), 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	config := freshStart + "  pstore:\n    paths: [" + pstore + "]\n"
	args := agentArgs(t, state, config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")
	first, _, _ := startAgent(t, args...)
	ev, _ := waitEvent(t, name, "KernelPanic", marker, 10*time.Second)
	if !strings.Contains(ev.Message, "before this boot") {
		t.Errorf("KernelPanic message %q does not say the crash was before this boot", ev.Message)
	}
	first.Process.Signal(syscall.SIGTERM)
	first.Wait()
	startAgent(t, args...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 10*time.Second)
	time.Sleep(2 * time.Second)
	list, err := cluster.Client.CoreV1().Events(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var count int32
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && e.Reason == "KernelPanic" {
			count += e.Count
		}
	}
	if count != 1 {
		t.Errorf("%d KernelPanic events after a restart, want 1", count)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	body, err := tryHTTPGet(url)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// tryHTTPGet is httpGet for a server that may not be listening yet.
func tryHTTPGet(url string) (string, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	return string(b), nil
}

func TestDeployAppliesWithServerDryRun(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Server-side dry-run of namespaced objects needs their namespace to
	// exist; the test makes it for real.
	ensureNamespace(t, "nodeguard")
	for dir, wants := range map[string][]string{
		"../../deploy":             {"daemonset.apps/nodeguard", "clusterrole.rbac.authorization.k8s.io/nodeguard", "configmap/nodeguard", "role.rbac.authorization.k8s.io/nodeguard", "flowschema.flowcontrol.apiserver.k8s.io/nodeguard", "prioritylevelconfiguration.flowcontrol.apiserver.k8s.io/nodeguard"},
		"../../deploy/remediation": {"daemonset.apps/nodeguard", "clusterrole.rbac.authorization.k8s.io/nodeguard-remediation"},
		"../../deploy/devkmsg":     {"daemonset.apps/nodeguard", "configmap/nodeguard"},
	} {
		path, _ := filepath.Abs(dir)
		out, err := c.Kubectl(ctx, "apply", "--dry-run=server", "-k", path)
		if err != nil {
			t.Fatalf("kubectl apply --dry-run=server -k %s: %v\n%s", dir, err, out)
		}
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("%s: dry-run output lacks %s:\n%s", dir, want, out)
			}
		}
	}
	// The ConfigMap's name carries a hash of the config and the DaemonSet
	// mounts it by that name, so that applying an edited config rolls the
	// pods out.
	deployDir, _ := filepath.Abs("../../deploy")
	base, err := c.Kubectl(ctx, "kustomize", deployDir)
	if err != nil {
		t.Fatalf("kubectl kustomize deploy: %v\n%s", err, base)
	}
	if m := regexp.MustCompile(`configMap:\s+name: (nodeguard-[a-z0-9]+)\s`).FindStringSubmatch(base); m == nil || !strings.Contains(base, "kind: ConfigMap\nmetadata:\n  name: "+m[1]+"\n") {
		t.Errorf("deploy: the DaemonSet does not mount a ConfigMap named by the config's hash:\n%s", base)
	}
	// Least privilege: the base's container is not privileged and drops
	// every capability; only the /dev/kmsg and remediation variants are.
	for dir, privileged := range map[string]bool{"../../deploy": false, "../../deploy/devkmsg": true, "../../deploy/remediation": true} {
		path, _ := filepath.Abs(dir)
		out, err := c.Kubectl(ctx, "kustomize", path)
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		if got := strings.Contains(out, "privileged: true"); got != privileged {
			t.Errorf("%s: privileged %v, want %v", dir, got, privileged)
		}
		if !privileged && (!strings.Contains(out, "- ALL") || strings.Contains(out, "path: /dev/kmsg")) {
			t.Errorf("%s: capabilities not all dropped, or /dev/kmsg mounted:\n%s", dir, out)
		}
	}
}

// ensureNamespace makes a namespace if it is not there. It is left behind:
// with no namespace controller in the test cluster a deleted namespace
// would stay Terminating, and it goes with the cluster.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	_, err := cluster.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// An agent that starts while the API server is down detects all the same:
// the checks do not wait for the Node to be read, and what they find
// reaches the Node once the server is back.
func TestDetectsWhileTheAPIServerIsDownAtStart(t *testing.T) {
	c := needCluster(t)
	needRoot(t, "writes records to /dev/kmsg")
	const name = "down-at-start-node"
	createNode(t, name)
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	up := false
	t.Cleanup(func() {
		if !up {
			c.StartAPIServer()
		}
	})
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	// The kernel log is read with no API server to be had.
	waitReading(t, stderr, "/dev/kmsg")
	pid := 100000 + rand.IntN(800000)
	writeKmsg(t, fmt.Sprintf("<3>INFO: task containerd:%d blocked for more than 120 seconds.\n", pid))
	marker := fmt.Sprintf("containerd:%d", pid)
	time.Sleep(2 * time.Second) // found, and held, while the server is down
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	up = true
	// The Node read backs off to 10 s between tries while the server is down.
	_, took := waitEvent(t, name, "TaskHung", marker, 60*time.Second)
	t.Logf("TaskHung event on the node %s after the API server was back", took)
	node, _ := waitCondition(t, name, "KernelDeadlock", corev1.ConditionTrue, 30*time.Second)
	if cond := condition(node, "KernelDeadlock"); !strings.Contains(cond.Message, marker) {
		t.Errorf("KernelDeadlock = %s %q, want a message naming %s", cond.Reason, cond.Message, marker)
	}
}
