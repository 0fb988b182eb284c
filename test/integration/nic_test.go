package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestNICDownAndFlappingFromARealVeth: a veth pair with its peer in a network
// namespace the test makes; setting the peer down takes the carrier from the
// end the agent watches, as a pulled cable or a dead switch port does.
func TestNICDownAndFlappingFromARealVeth(t *testing.T) {
	needCluster(t)
	needRoot(t, "makes a network namespace and a veth pair")
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip from iproute2")
	}
	ns := fmt.Sprintf("ngtest%d", os.Getpid())
	host, peer := fmt.Sprintf("ngh%d", os.Getpid()%100000), fmt.Sprintf("ngp%d", os.Getpid()%100000)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", host).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	run(t, "ip", "link", "set", peer, "netns", ns)
	run(t, "ip", "link", "set", host, "up")
	peerLink := func(state string) { run(t, "ip", "-n", ns, "link", "set", peer, state) }
	peerLink("up")

	const name = "nic-node"
	createNode(t, name)
	config := freshStart + "  nic:\n    interfaces: [" + host + "]\n    period: 1s\n    flapThreshold: 4\n    flapWindow: 1m\n"
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "NICDown", corev1.ConditionFalse, 20*time.Second)

	peerLink("down")
	node, took := waitCondition(t, name, "NICDown", corev1.ConditionTrue, 15*time.Second) // period + 2 s
	t.Logf("NICDown True %s after the peer went down: %s", took, condition(node, "NICDown").Message)
	if msg := condition(node, "NICDown").Message; !strings.Contains(msg, host) || !strings.Contains(msg, "no carrier") {
		t.Errorf("NICDown message %q does not name %s and its lost carrier", msg, host)
	}
	peerLink("up")
	_, took = waitCondition(t, name, "NICDown", corev1.ConditionFalse, 15*time.Second)
	t.Logf("NICDown False %s after the peer came back", took)

	// Flap it: each down and up is two carrier changes.
	for range 3 {
		peerLink("down")
		time.Sleep(100 * time.Millisecond)
		peerLink("up")
		time.Sleep(100 * time.Millisecond)
	}
	node, _ = waitCondition(t, name, "NICFlapping", corev1.ConditionTrue, 15*time.Second)
	t.Logf("NICFlapping: %s", condition(node, "NICFlapping").Message)
	waitEvent(t, name, "NICFlapping", host, 15*time.Second)
}
