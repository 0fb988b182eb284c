package integration

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

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
