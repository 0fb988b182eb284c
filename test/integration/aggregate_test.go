package integration

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// aggregateConfig reads kernel lines from logFile, with the rules of
// KernelDeadlock and FrequentUnregisterNetDevice replaced by ones that
// fire on one line and clear after 3 quiet seconds, and publishes the
// aggregate conditions.
func aggregateConfig(logFile string) string {
	return `checks:
  kmsg:
    devKmsg: false
    files: [{path: ` + logFile + `}]
    expireInterval: 1s
    rules:
      - name: runtime-hung
        kind: condition
        condition: KernelDeadlock
        reason: ContainerRuntimeHung
        pattern: 'INFO: task containerd:\d+ blocked for more than \d+ seconds'
        clearAfter: 3s
      - name: frequent-unregister-netdevice
        kind: condition
        condition: FrequentUnregisterNetDevice
        reason: UnregisterNetDevice
        pattern: 'unregister_netdevice: waiting for \S+ to become free'
        clearAfter: 3s
reporter:
  aggregateConditions: true
`
}

// startAggregateAgent runs the kmsg check alone for node name with
// aggregateConfig, and returns the process, its log file, stderr and
// metrics address.
func startAggregateAgent(t *testing.T, name string) (*exec.Cmd, string, *syncBuffer, string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "kern.log")
	if err := os.WriteFile(logFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd, _, stderr := startAgent(t, append(onlyCheck(t, "kmsg"), agentArgs(t, t.TempDir(), aggregateConfig(logFile),
		"--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)...)
	return cmd, logFile, stderr, addr
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("Nov 23 10:00:00 node-1 kernel: [1000.000000] " + line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// TestAggregateConditionsFollowTheMapping: with reporter.aggregateConditions
// the real agent publishes KernelReady True, turns it False naming the
// nodeguard types that are True when a hung runtime task and an
// unregister_netdevice line arrive, and True again when they clear. An
// aggregate none of whose types a running check owns (NetworkingReady,
// with the nic and dns checks off) is not published.
func TestAggregateConditionsFollowTheMapping(t *testing.T) {
	needCluster(t)
	const name = "aggregate-node"
	createNode(t, name)
	_, logFile, stderr, addr := startAggregateAgent(t, name)
	node, _ := waitConditionIs(t, name, "KernelReady", "True KernelIsReady", 20*time.Second,
		is(corev1.ConditionTrue, "KernelIsReady"))
	healthySince := condition(node, "KernelReady").LastTransitionTime
	for typ, want := range map[string]corev1.ConditionStatus{"StorageReady": corev1.ConditionTrue, "ContainerRuntimeReady": corev1.ConditionTrue} {
		if c := condition(node, typ); c == nil || c.Status != want {
			t.Errorf("%s = %+v, want %s (the kmsg check owns a source of it)", typ, c, want)
		}
	}
	if c := condition(node, "NetworkingReady"); c != nil {
		t.Errorf("NetworkingReady = %+v, want none: no running check owns NICDown, NICFlapping or ClusterDNSUnreachable", c)
	}
	waitReading(t, stderr, logFile)

	appendLine(t, logFile, "INFO: task containerd:4242 blocked for more than 120 seconds.")
	node, took := waitConditionIs(t, name, "KernelReady", "False KernelDeadlock", 20*time.Second,
		is(corev1.ConditionFalse, "KernelDeadlock"))
	t.Logf("KernelReady False %s after the hung-task line", took)
	if c := condition(node, "KernelReady"); !strings.HasPrefix(c.Message, "KernelDeadlock: ") || !strings.Contains(c.Message, "containerd:4242") {
		t.Errorf("KernelReady's message = %q, want it to name KernelDeadlock and what it says", c.Message)
	}
	// The runtime-task-hung rule raises ContainerRuntimeUnresponsive too.
	if c := condition(node, "ContainerRuntimeReady"); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "ContainerRuntimeUnresponsive" {
		t.Errorf("ContainerRuntimeReady = %+v, want False ContainerRuntimeUnresponsive", c)
	}
	metrics := httpGet(t, "http://"+addr+"/metrics")
	if !strings.Contains(metrics, `nodeguard_condition{condition="KernelReady",status="False"} 1`) {
		t.Errorf("/metrics lacks KernelReady False:\n%s", grepLines(metrics, "KernelReady"))
	}

	appendLine(t, logFile, "unregister_netdevice: waiting for eth1 to become free. Usage count = 2")
	node, _ = waitConditionIs(t, name, "KernelReady", "False naming both types", 20*time.Second, func(c *corev1.NodeCondition) bool {
		return c.Status == corev1.ConditionFalse && strings.Contains(c.Message, "FrequentUnregisterNetDevice: ")
	})
	if c := condition(node, "KernelReady"); c.Reason != "KernelDeadlock" || !strings.Contains(c.Message, "KernelDeadlock: ") {
		t.Errorf("KernelReady = %s %q, want reason KernelDeadlock (first in the mapping) and both types in the message", c.Reason, c.Message)
	}

	node, took = waitConditionIs(t, name, "KernelReady", "True KernelIsReady", 30*time.Second,
		is(corev1.ConditionTrue, "KernelIsReady"))
	t.Logf("KernelReady True again %s after the second line (both rules clear after 3 quiet seconds)", took)
	if c := condition(node, "KernelDeadlock"); c.Status != corev1.ConditionFalse {
		t.Errorf("KernelDeadlock = %s after KernelReady cleared, want False", c.Status)
	}
	if c := condition(node, "KernelReady"); !c.LastTransitionTime.After(healthySince.Time) {
		t.Errorf("KernelReady's lastTransitionTime %v did not move past %v over False and back", c.LastTransitionTime, healthySince)
	}
}

// is matches a condition of the status and reason.
func is(status corev1.ConditionStatus, reason string) func(*corev1.NodeCondition) bool {
	return func(c *corev1.NodeCondition) bool { return c.Status == status && c.Reason == reason }
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitExit waits up to timeout for cmd to exit and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the agent did not exit within %s", timeout)
		return 0
	}
}

// writeAsEKSAgent writes KernelReady on node as the EKS node monitoring
// agent does, in its words and under its field manager.
func writeAsEKSAgent(t *testing.T, name string) {
	t.Helper()
	now := metav1.Now()
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: "KernelReady", Status: corev1.ConditionTrue, Reason: "KernelIsReady",
		Message: "Monitoring for the Kernel system is active", LastHeartbeatTime: now, LastTransitionTime: now,
	}}}})
	if _, err := cluster.Client.CoreV1().Nodes().Patch(context.Background(), name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: eksAgent}, "status"); err != nil {
		t.Fatal(err)
	}
}

const eksAgent = "eks-node-monitoring-agent"

// refused starts the agent on node name, which must exit non-zero, and
// returns what it printed.
func refused(t *testing.T, name string) string {
	t.Helper()
	cmd, _, stderr, _ := startAggregateAgent(t, name)
	code := waitExit(t, cmd, 30*time.Second)
	out := stderr.String()
	if code == 0 {
		t.Fatalf("the agent exited 0 beside another writer of KernelReady; stderr:\n%s", out)
	}
	t.Logf("exit %d: %s", code, lastLine(out))
	got, err := cluster.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := condition(got, "KernelDeadlock"); c != nil {
		t.Errorf("the refusing agent wrote KernelDeadlock: %+v", c)
	}
	if c := condition(got, "KernelReady"); c == nil || c.Message != "Monitoring for the Kernel system is active" {
		t.Errorf("the other writer's KernelReady changed: %+v", c)
	}
	return out
}

// TestRefusesToStartWhenAnotherWriterOwnsAnAggregate: a Node whose
// KernelReady another field manager wrote (as the EKS node monitoring
// agent does) makes the agent exit non-zero, naming the condition and the
// manager, having written no condition; so does one whose managedFields
// say nothing, by the other writer's words. Once the condition is deleted
// the agent starts, and a restart over its own earlier writes starts too.
func TestRefusesToStartWhenAnotherWriterOwnsAnAggregate(t *testing.T) {
	needCluster(t)
	ctx := context.Background()
	// A Node created with no field of its own (createNode's) gets no
	// managedFields from later writes either (the API server does not
	// start tracking an object created untracked); one a kubelet
	// registers has labels from the start, and so managedFields.
	const name = "foreign-node"
	if _, err := cluster.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"kubernetes.io/hostname": name}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	writeAsEKSAgent(t, name)
	if out := refused(t, name); !strings.Contains(out, "condition KernelReady on node "+name+` is written by field manager "`+eksAgent+`"`) {
		t.Errorf("the refusal does not name KernelReady and field manager %s:\n%s", eksAgent, out)
	}

	const bare = "foreign-node-untracked"
	createNode(t, bare)
	writeAsEKSAgent(t, bare)
	if got, _ := cluster.Client.CoreV1().Nodes().Get(ctx, bare, metav1.GetOptions{}); len(got.ManagedFields) > 0 {
		t.Fatalf("node %s has managedFields %v; this case is about a Node without", bare, got.ManagedFields)
	}
	if out := refused(t, bare); !strings.Contains(out, "condition KernelReady on node "+bare+` is written by a writer whose reason "KernelIsReady" and message are not nodeguard's`) {
		t.Errorf("the refusal does not name KernelReady and the other writer's words:\n%s", out)
	}

	// The hand-over docs/consumers.md gives: delete the other writer's
	// condition from the status.
	del, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]string{{"type": "KernelReady", "$patch": "delete"}}}})
	if _, err := cluster.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, del, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	cmd, _, _, _ := startAggregateAgent(t, name)
	waitConditionIs(t, name, "KernelReady", "True KernelIsReady from nodeguard", 20*time.Second,
		is(corev1.ConditionTrue, "KernelIsReady"))
	got, _ := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err := reporter.ForeignWriter(got, aggregatesOf(got)); err != nil {
		t.Errorf("after nodeguard's own write: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Errorf("the agent exited %d on SIGTERM", code)
	}

	// A restart over what nodeguard itself wrote starts and keeps going.
	cmd, logFile, stderr, _ := startAggregateAgent(t, name)
	waitReading(t, stderr, logFile)
	appendLine(t, logFile, "INFO: task containerd:77 blocked for more than 120 seconds.")
	waitConditionIs(t, name, "KernelReady", "False KernelDeadlock after the restart", 20*time.Second,
		is(corev1.ConditionFalse, "KernelDeadlock"))
	if cmd.ProcessState != nil {
		t.Errorf("the restarted agent exited: %v\n%s", cmd.ProcessState, stderr.String())
	}
}

// aggregatesOf are the aggregate types on node, as a published set.
func aggregatesOf(node *corev1.Node) []finding.Aggregate {
	var out []finding.Aggregate
	for _, a := range finding.Aggregates() {
		if condition(node, a.Type) != nil {
			out = append(out, a)
		}
	}
	return out
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
