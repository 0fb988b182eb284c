package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/nodeguard/nodeguard/internal/testcluster"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// After an API server outage longer than the Lease's duration no kubelet
// could have renewed, on any node: an agent that judged the Lease the
// moment it could read it again would raise KubeletLeaseStale on every
// node of the cluster at once. The test plays a healthy kubelet, which
// renews a moment after the server is back.
func TestNoLeaseVerdictAfterAnAPIServerOutage(t *testing.T) {
	c := needCluster(t)
	for _, tc := range []struct {
		name string
		stop func() error
	}{
		// Killed, the server is gone at once and the agent's watch fails.
		{"killed", c.KillAPIServer},
		// Stopped, it drains first: it refuses new requests, so the
		// kubelet's renewals fail, while the agent's open watch stays quiet
		// and looks current. Here the drain lasts about 2 s, on the real
		// node (test/e2e) 18 s: the lease check's read before a stale
		// verdict is what keeps that from looking like a stuck kubelet.
		{"stopped gracefully", c.StopAPIServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "lease-outage-" + strings.ReplaceAll(tc.name, " ", "-")
			createNode(t, name)
			renewing := playKubeletLease(t, c, name)
			_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
			waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionFalse, 20*time.Second)

			// The lease lasts 8 s; the outage is twice that. The test's
			// kubelet keeps trying every 2 s, as a real one does, and its
			// renewals fail until the server is back.
			apiServerOutage(t, c, tc.stop, 16*time.Second)
			back := time.Now()
			// The agent's log has every status it set, even one the test's
			// reads of the Node would miss between two polls.
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				node, err := c.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
				if err == nil {
					if cond := condition(node, "KubeletLeaseStale"); cond != nil && cond.Status == corev1.ConditionTrue {
						t.Fatalf("KubeletLeaseStale True %s after the API server came back, with a kubelet renewing: %s", time.Since(back).Round(100*time.Millisecond), cond.Message)
					}
				}
				time.Sleep(250 * time.Millisecond)
			}
			if line := loggedStatus(stderr.String(), "KubeletLeaseStale", "True"); line != "" {
				t.Fatalf("the agent set KubeletLeaseStale True through the outage: %s", line)
			}
			// The check is still alive: a kubelet that stops renewing now is
			// seen.
			renewing <- false
			_, took := waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionTrue, 30*time.Second)
			t.Logf("KubeletLeaseStale True %s after renewals stopped, past the outage", took)
		})
	}
}

// loggedStatus returns the first line of the agent's log that sets
// condition typ to status, or "".
func loggedStatus(log, typ, status string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `"condition":"`+typ+`"`) && strings.Contains(line, `"status":"`+status+`"`) {
			return line
		}
	}
	return ""
}

// The Lease's watch delivers again after the API server restarts: the
// renewals after the outage arrive as watch events, not only through the
// direct read an agent falls back on after 30 s of silence.
func TestLeaseWatchDeliversAfterAnAPIServerRestart(t *testing.T) {
	c := needCluster(t)
	const name = "lease-watch-restart-node"
	createNode(t, name)
	playKubeletLease(t, c, name)
	rc := rest.CopyConfig(c.Config)
	kube.ForAgent(rc, 20, 40)
	clients, err := kube.NewClients(rc)
	if err != nil {
		t.Fatal(err)
	}
	w := kube.NewLeaseWatcher(clients.Watches, name)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	renewedAfter := func(since time.Time, within time.Duration) (time.Duration, bool) {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if l, ok, since := w.NodeLease(); ok && !since.IsZero() && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since) {
				return time.Since(since), true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return 0, false
	}
	if _, ok := renewedAfter(time.Now(), 10*time.Second); !ok {
		t.Fatal("the watch saw no renewal before the outage")
	}
	apiServerOutage(t, c, c.StopAPIServer, 16*time.Second)
	back := time.Now()
	// The renewer retries every 2 s; the watch must bring its renewal
	// well before the 30 s after which the agent would read the Lease.
	took, ok := renewedAfter(back, 25*time.Second)
	if !ok {
		t.Fatal("the watch brought no renewal in 25 s after the API server was back")
	}
	t.Logf("the watch brought the first renewal %s after the API server was back", took.Round(100*time.Millisecond))
}

// apiServerOutage stops the API server with stop, waits out the outage and
// starts it again; a test that fails meanwhile still gets it back.
func apiServerOutage(t *testing.T, c *testcluster.Cluster, stop func() error, outage time.Duration) {
	t.Helper()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			c.StartAPIServer()
		}
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage)
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
}
