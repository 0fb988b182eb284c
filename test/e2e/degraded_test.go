package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDegradedWhileTheJournalCannotBeRead starts the agent on a node whose
// journal it may not read: the journal's directory made mode 000, which the
// pod, root without CAP_DAC_OVERRIDE as deploy/ ships it, cannot list,
// while journald (root with every capability) goes on writing. The agent
// reads the kernel's messages from that journal, so it would detect
// nothing; deploy/'s reportDegraded makes NodeguardDegraded True instead,
// and False once the journal can be read again.
func TestDegradedWhileTheJournalCannotBeRead(t *testing.T) {
	n := needNode(t)
	if !n.Journald {
		t.Skip("no systemd-journald runs for the node")
	}
	ctx := context.Background()
	mid, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		t.Fatal(err)
	}
	dir := n.HostPath(filepath.Join("/run/log/journal", strings.TrimSpace(string(mid))))
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c := condition(t, n, "NodeguardDegraded"); c.Status != corev1.ConditionFalse {
		t.Fatalf("NodeguardDegraded is %s before the test: %s", c.Status, c.Message)
	}
	restore := func() {
		if err := os.Chmod(dir, info.Mode().Perm()); err != nil {
			t.Errorf("restoring %s's mode: %v", dir, err)
		}
	}
	if err := os.Chmod(dir, 0); err != nil {
		t.Fatal(err)
	}
	restored := false
	t.Cleanup(func() {
		if !restored {
			restore()
		}
	})
	// The running agent holds its journal files open; the one the
	// DaemonSet starts next must open them.
	old := currentPod(t, n)
	if err := n.Client.CoreV1().Pods(namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitDaemonSetReady(t, n, old.Name)
	started := pod.CreationTimestamp.Time
	var degraded corev1.NodeCondition
	waitFor(t, 5*time.Minute, "NodeguardDegraded True while the journal cannot be read", func() (bool, string) {
		degraded = condition(t, n, "NodeguardDegraded")
		return degraded.Status == corev1.ConditionTrue, degraded.Message
	})
	if !strings.Contains(degraded.Message, "kmsg") || !strings.Contains(degraded.Message, "journal") {
		t.Errorf("NodeguardDegraded does not name the kernel log check and the journal: %s", degraded.Message)
	}
	t.Logf("NodeguardDegraded: %s", degraded.Message)
	trueAt := time.Since(started)

	restore()
	restored = true
	fixed := time.Now()
	waitFor(t, 6*time.Minute, "NodeguardDegraded False once the journal can be read", func() (bool, string) {
		c := condition(t, n, "NodeguardDegraded")
		return c.Status == corev1.ConditionFalse, c.Message
	})
	t.Logf("FIGURE journal unreadable: NodeguardDegraded True %.0f s after the agent started, False %.0f s after the journal could be read again",
		trueAt.Seconds(), time.Since(fixed).Seconds())
}
