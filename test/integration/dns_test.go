package integration

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nodeguard/nodeguard/internal/testdns"
)

// TestClusterDNSUnreachable: a DNS server the test runs on loopback stands
// for the cluster DNS; it stops answering, then answers again.
func TestClusterDNSUnreachable(t *testing.T) {
	needCluster(t)
	dns := testdns.Start(t)
	const name = "dns-node"
	createNode(t, name)
	config := freshStart + "  dns:\n    server: " + dns.Addr + "\n    period: 500ms\n    timeout: 300ms\n    failureThreshold: 3\n"
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	node, _ := waitCondition(t, name, "ClusterDNSUnreachable", corev1.ConditionFalse, 20*time.Second)
	if c := condition(node, "ClusterDNSUnreachable"); c.Reason != "ClusterDNSAnswers" {
		t.Errorf("with DNS answering: %s %q", c.Reason, c.Message)
	}
	time.Sleep(time.Second)

	dns.Set(testdns.Hang)
	node, took := waitCondition(t, name, "ClusterDNSUnreachable", corev1.ConditionTrue, 15*time.Second)
	t.Logf("True %s after DNS stopped answering: %s", took, condition(node, "ClusterDNSUnreachable").Message)

	dns.Set(testdns.Answer)
	_, took = waitCondition(t, name, "ClusterDNSUnreachable", corev1.ConditionFalse, 15*time.Second)
	t.Logf("False %s after DNS answered again", took)
}
