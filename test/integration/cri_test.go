package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/internal/testcontainerd"
)

func startContainerd(t *testing.T) *testcontainerd.Containerd {
	t.Helper()
	c, err := testcontainerd.Start()
	if errors.Is(err, testcontainerd.ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestContainerRuntimeUnresponsiveWithRealContainerd(t *testing.T) {
	needCluster(t)
	needRoot(t, "runs containerd")
	ctd := startContainerd(t)
	const name = "cri-node"
	createNode(t, name)
	config := freshStart + fmt.Sprintf("  cri:\n    endpoint: unix://%s\n    period: 1s\n    timeout: 1s\n    failureThreshold: 2\n", ctd.Socket)
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	node, _ := waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionFalse, 20*time.Second)
	if c := condition(node, "ContainerRuntimeUnresponsive"); c.Reason != "ContainerRuntimeIsResponsive" {
		t.Errorf("with containerd answering: %s %q", c.Reason, c.Message)
	}
	// Start from a condition the runtime set, not the healthy default.
	time.Sleep(2 * time.Second)

	// Hung: the process is there, its socket accepts, nothing answers.
	ctd.Signal(syscall.SIGSTOP)
	node, took := waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionTrue, 10*time.Second)
	c := condition(node, "ContainerRuntimeUnresponsive")
	t.Logf("True %s after SIGSTOP: %s %s", took, c.Reason, c.Message)
	if c.Reason != "Timeout" {
		t.Errorf("hung containerd gave reason %s, want Timeout", c.Reason)
	}

	// Gone: the socket is removed.
	ctd.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		node, _ = waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionTrue, 10*time.Second)
		if c = condition(node, "ContainerRuntimeUnresponsive"); c.Reason == "SocketMissing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after containerd exited: %s %q, want SocketMissing", c.Reason, c.Message)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after containerd exited: %s %s", c.Reason, c.Message)

	// Back: it clears.
	if err := ctd.Start(); err != nil {
		t.Fatal(err)
	}
	_, took = waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionFalse, 10*time.Second)
	t.Logf("False %s after containerd was started again", took)
}

// The probe's marks on its sandboxes, as pkg/checks/cri writes them: the
// test makes a leftover with them, and looks for what the probe leaves.
const (
	probeLabel, probeLabelValue = "nodeguard.io/probe", "sandbox"
	probeNamespace              = "nodeguard-probe"
)

// criRuntime dials containerd for the test's own CRI calls.
func criRuntime(t *testing.T, socket string) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

// probeSandboxes lists the sandboxes carrying the probe's label.
func probeSandboxes(t *testing.T, rt runtimeapi.RuntimeServiceClient) []*runtimeapi.PodSandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{probeLabel: probeLabelValue}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Items
}

// runProbeLikeSandbox starts a sandbox as the probe does, and says how
// long RunPodSandbox took.
func runProbeLikeSandbox(t *testing.T, rt runtimeapi.RuntimeServiceClient, name string) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Uid: name, Namespace: probeNamespace},
		Labels:   map[string]string{probeLabel: probeLabelValue},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	return resp.PodSandboxId, time.Since(start)
}

// removeSandbox stops and removes a sandbox, and says how long that took.
func removeSandbox(t *testing.T, rt runtimeapi.RuntimeServiceClient, id string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	return time.Since(start)
}

// sandboxCgroups lists the cgroup directories named after any of ids, in
// every hierarchy (containerd puts a sandbox with no cgroup parent in
// /k8s.io/ID under the cgroupfs driver).
func sandboxCgroups(t *testing.T, ids map[string]bool) []string {
	t.Helper()
	var found []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if ids[d.Name()] {
			found = append(found, p)
			return filepath.SkipDir
		}
		// The sandboxes sit two levels down; deeper is other processes'.
		if strings.Count(strings.TrimPrefix(p, "/sys/fs/cgroup"), "/") > 3 {
			return filepath.SkipDir
		}
		return nil
	})
	return found
}

func TestSandboxProbeWithRealContainerd(t *testing.T) {
	needCluster(t)
	needRoot(t, "runs containerd and pod sandboxes")
	ctd := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ctd.ImportPause(ctx); err != nil {
		t.Fatal(err)
	}
	rt := criRuntime(t, ctd.Socket)
	seen := map[string]bool{}

	// What a sandbox start and removal costs here, for the probe's period.
	var runs, removes []time.Duration
	for i := range 5 {
		id, took := runProbeLikeSandbox(t, rt, fmt.Sprintf("nodeguard-probe-measure-%d", i))
		seen[id] = true
		runs, removes = append(runs, took), append(removes, removeSandbox(t, rt, id))
	}
	slices.Sort(runs)
	slices.Sort(removes)
	t.Logf("5 sandboxes here: RunPodSandbox median %s (%s-%s), Stop+RemovePodSandbox median %s (%s-%s)",
		runs[2], runs[0], runs[4], removes[2], removes[0], removes[4])

	// What an agent killed in mid-probe leaves: the next one removes it.
	leftover, _ := runProbeLikeSandbox(t, rt, "nodeguard-probe-1-1")
	seen[leftover] = true

	const name = "sandbox-node"
	createNode(t, name)
	addr := freeAddr(t)
	config := freshStart + fmt.Sprintf("  cri:\n    endpoint: unix://%s\n    period: 1s\n    timeout: 2s\n    failureThreshold: 2\n"+
		"    sandboxPeriod: 2s\n    sandboxTimeout: 20s\n", ctd.Socket)
	cmd, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)

	deadline := time.Now().Add(15 * time.Second)
	for slices.ContainsFunc(probeSandboxes(t, rt), func(sb *runtimeapi.PodSandbox) bool { return sb.Id == leftover }) {
		if time.Now().After(deadline) {
			t.Fatalf("the leftover sandbox %s is still there 15 s after the agent started", leftover)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Healthy: the verdict says a sandbox was started and removed, and the
	// probe's sandboxes never pile up.
	const healthy = "starts and removes a pod sandbox of " + testcontainerd.PauseImage
	_, took := waitConditionIs(t, name, "ContainerRuntimeUnresponsive", "False naming the sandbox", 20*time.Second, func(c *corev1.NodeCondition) bool {
		return c.Status == corev1.ConditionFalse && strings.Contains(c.Message, healthy)
	})
	t.Logf("False, naming the sandbox, %s after the agent started", took)
	for range 30 {
		items := probeSandboxes(t, rt)
		if len(items) > 1 {
			t.Fatalf("%d probe sandboxes at once: %v", len(items), items)
		}
		for _, sb := range items {
			seen[sb.Id] = true
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Broken: containerd answers every call, but runc cannot create.
	if err := ctd.BreakRunc(true); err != nil {
		t.Fatal(err)
	}
	node, took := waitConditionIs(t, name, "ContainerRuntimeUnresponsive", "True SandboxCreateFailed", 30*time.Second, func(c *corev1.NodeCondition) bool {
		return c.Status == corev1.ConditionTrue && c.Reason == "SandboxCreateFailed"
	})
	c := condition(node, "ContainerRuntimeUnresponsive")
	t.Logf("True %s after runc broke: %s %s", took, c.Reason, c.Message)
	if !strings.Contains(c.Message, "CRI RunPodSandbox on unix://"+ctd.Socket+" failed") {
		t.Errorf("the message does not say RunPodSandbox failed: %q", c.Message)
	}
	// The calls' probe still passes: its failure's reason would come first.
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := rt.Version(vctx, &runtimeapi.VersionRequest{})
	vcancel()
	if err != nil {
		t.Errorf("Version while runc is broken: %v", err)
	}
	for _, sb := range probeSandboxes(t, rt) {
		seen[sb.Id] = true
	}

	// Healed: the next good sandbox clears it.
	if err := ctd.BreakRunc(false); err != nil {
		t.Fatal(err)
	}
	_, took = waitConditionIs(t, name, "ContainerRuntimeUnresponsive", "False naming the sandbox", 30*time.Second, func(c *corev1.NodeCondition) bool {
		return c.Status == corev1.ConditionFalse && strings.Contains(c.Message, healthy)
	})
	t.Logf("False %s after runc was mended", took)

	// The latency histogram has the sandbox calls.
	metrics := httpGet(t, "http://"+addr+"/metrics")
	for _, method := range []string{"RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"} {
		sum, count := metricValue(metrics, "nodeguard_cri_request_duration_seconds_sum", method), metricValue(metrics, "nodeguard_cri_request_duration_seconds_count", method)
		if count == 0 {
			t.Errorf("no %s observed in nodeguard_cri_request_duration_seconds", method)
			continue
		}
		t.Logf("agent's %s: %.0f ok, mean %.1f ms", method, count, 1000*sum/count)
	}

	// Stopped, the agent leaves no sandbox and no cgroup behind.
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still running 10 s after SIGTERM; stderr:\n%s", stderr.String())
	}
	if left := probeSandboxes(t, rt); len(left) != 0 {
		t.Errorf("probe sandboxes left after the agent stopped: %v", left)
	}
	started, err := ctd.SandboxIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range started {
		seen[id] = true
	}
	if len(seen) < 10 {
		t.Errorf("containerd's log names %d sandboxes started, the test saw %d; want the test's 6 and the agent's", len(started), len(seen))
	}
	if cg := sandboxCgroups(t, seen); len(cg) != 0 {
		t.Errorf("cgroups of removed sandboxes left: %v", cg)
	}
	t.Logf("%d sandboxes started, none left, nor their cgroups", len(seen))
}

// metricValue is the value of a histogram's _sum or _count series of ok
// calls of method in a /metrics page, 0 if absent.
func metricValue(page, series, method string) float64 {
	prefix := fmt.Sprintf(`%s{method=%q,result="ok"} `, series, method)
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
