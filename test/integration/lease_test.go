package integration

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/internal/testcluster"
)

// TestKubeletLeaseStaleWhileTheAgentReachesTheAPIServer: the test plays the
// kubelet, renewing the node's Lease, then stops as a kubelet stuck on a
// dead connection does, then resumes.
func TestKubeletLeaseStaleWhileTheAgentReachesTheAPIServer(t *testing.T) {
	c := needCluster(t)
	const name = "lease-node"
	createNode(t, name)
	renewing := playKubeletLease(t, c, name)

	startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionFalse, 20*time.Second)
	// Renewing for a while keeps it False.
	time.Sleep(5 * time.Second)
	waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionFalse, time.Second)

	renewing <- false
	stopped := time.Now()
	node, _ := waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionTrue, 30*time.Second)
	// Expected within the threshold (4 s) and the check's period of the
	// last renewal; logged, not asserted, so that a slow machine does not
	// fail the test.
	t.Logf("KubeletLeaseStale True %s after the last renewal could have happened: %s", time.Since(stopped), condition(node, "KubeletLeaseStale").Message)
	renewing <- true
	_, took := waitCondition(t, name, "KubeletLeaseStale", corev1.ConditionFalse, 15*time.Second)
	t.Logf("KubeletLeaseStale False %s after renewals resumed", took)
}

// playKubeletLease makes the node's Lease and renews it as the kubelet
// does, until the test ends; sending false on the channel stops the
// renewals, true starts them again.
func playKubeletLease(t *testing.T, c *testcluster.Cluster, name string) chan<- bool {
	t.Helper()
	ctx := context.Background()
	// An 8 s lease: the kubelet renews every 2 s (a quarter), and the agent's
	// threshold is twice that, 4 s. The default 40 s lease scales the same.
	duration := int32(8)
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-node-lease"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: new(string), LeaseDurationSeconds: &duration, RenewTime: &now},
	}
	*lease.Spec.HolderIdentity = name
	leases := c.Client.CoordinationV1().Leases("kube-node-lease")
	lease, err := leases.Create(ctx, lease, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leases.Delete(context.Background(), name, metav1.DeleteOptions{}) })

	renewing := make(chan bool)
	done := make(chan struct{})
	go func() {
		defer close(done)
		on := true
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case v, ok := <-renewing:
				if !ok {
					return
				}
				on = v
			case <-tick.C:
				if !on {
					continue
				}
				l, err := leases.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					continue
				}
				now := metav1.NewMicroTime(time.Now())
				l.Spec.RenewTime = &now
				leases.Update(ctx, l, metav1.UpdateOptions{})
			}
		}
	}()
	t.Cleanup(func() { close(renewing); <-done })
	return renewing
}
