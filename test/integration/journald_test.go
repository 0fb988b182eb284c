package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/internal/journaltest"
)

// TestKubeletLeaseFailuresInTheJournalReachTheNode: the lease bug as an SRE
// meets it. The kubelet's Lease still looks fresh (the test renews it), but
// the kubelet's journal says three times in a row that it failed to update
// the lease over a dead connection. The agent, reading real journal files
// written while it runs, puts an event per line on the Node through the real
// API server. KubeletLeaseStale stays False: the Lease is the lease check's
// to judge, and the kubelet logs the same lines through any control-plane
// outage, when blaming it would be wrong on every node at once.
func TestKubeletLeaseFailuresInTheJournalReachTheNode(t *testing.T) {
	c := needCluster(t)
	if _, err := os.Stat("/usr/include/systemd/sd-journal.h"); err != nil {
		t.Skip("the agent is built without the journal reader: libsystemd's headers are missing (Debian package libsystemd-dev; `make test` installs it)")
	}
	journaltest.Remote(t)
	const name = "journal-node"
	createNode(t, name)
	playKubeletLease(t, c, name)

	dir := t.TempDir()
	// The kubelet's journal already holds lines from before the agent
	// started; they are not read again.
	start := time.Now()
	journaltest.Write(t, dir, "before.journal",
		journaltest.Unit(start.Add(-time.Minute), "kubelet.service", `E1123 09:59:00.000000    1234 controller.go:145] "Failed to update lease" err="an old failure, before the agent"`))
	config := fmt.Sprintf("checks:\n  kmsg:\n    startAtEnd: true\n  journald:\n    dir: %s\n", dir)
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionFalse, 20*time.Second)
	// Entries written from now on are read.
	waitLogged(t, stderr, "reading the journal")

	// What kubelet logs when its connection to the API server died under
	// it (kubernetes/kubernetes#87615): each renewal fails at once.
	marker := fmt.Sprintf("10.0.0.5:%d", 30000+rand.IntN(30000))
	line := fmt.Sprintf(`E1123 10:00:00.000000    1234 controller.go:145] "Failed to update lease" err="Put \"https://10.0.0.1:443/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/%s?timeout=10s\": write tcp %s->10.0.0.1:443: use of closed network connection"`, name, marker)
	now := time.Now()
	var entries []journaltest.Entry
	for i := range 3 {
		entries = append(entries, journaltest.Unit(now.Add(time.Duration(i)*10*time.Second), "kubelet.service", line))
	}
	journaltest.Write(t, dir, "after.journal", entries...)

	ev, took := waitEvent(t, name, "KubeletLeaseUpdateFailed", marker, 15*time.Second)
	t.Logf("KubeletLeaseUpdateFailed event %s after the journal file was written: %s", took, ev.Message)
	// The three failures become one Event whose count the recorder raises
	// as the others come.
	for deadline := time.Now().Add(15 * time.Second); countEvents(t, name, "KubeletLeaseUpdateFailed") < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%d KubeletLeaseUpdateFailed events counted after 15 s, want one per failed renewal (3)", countEvents(t, name, "KubeletLeaseUpdateFailed"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if node, err := cluster.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if cond := condition(node, "KubeletLeaseStale"); cond == nil || cond.Status != corev1.ConditionFalse {
		t.Errorf("KubeletLeaseStale after three logged lease failures with a fresh Lease: %+v, want False", cond)
	}
	for _, e := range listEvents(t, name, "KubeletLeaseUpdateFailed") {
		if strings.Contains(e.Message, "an old failure, before the agent") {
			t.Errorf("the agent reported a journal entry from before it started: %s", e.Message)
		}
	}
}
