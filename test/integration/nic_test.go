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

// vethIntoNamespace makes a network namespace and a veth pair whose host
// end is up and whose peer is in the namespace, and removes both when the
// test ends. Names start with prefix (kept short: interface names are at
// most 15 bytes).
func vethIntoNamespace(t *testing.T, prefix string) (ns, host, peer string) {
	t.Helper()
	needRoot(t, "makes a network namespace and a veth pair")
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip from iproute2")
	}
	id := os.Getpid() % 100000
	ns, host, peer = fmt.Sprintf("%s-ns%d", prefix, id), fmt.Sprintf("%sh%d", prefix, id), fmt.Sprintf("%sp%d", prefix, id)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", host).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	run(t, "ip", "link", "set", peer, "netns", ns)
	run(t, "ip", "link", "set", host, "up")
	return ns, host, peer
}

// TestNICDownAndFlappingFromARealVeth: a veth pair with its peer in a network
// namespace the test makes; setting the peer down takes the carrier from the
// end the agent watches, as a pulled cable or a dead switch port does.
func TestNICDownAndFlappingFromARealVeth(t *testing.T) {
	needCluster(t)
	ns, host, peer := vethIntoNamespace(t, "ngt")
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

// TestUplinkFoundByItsRouteIsWatchedAfterTheRouteGoes: with no interfaces
// configured the agent watches the interfaces holding a default route. In a
// network namespace of the test's own, the agent runs as it would on a node
// whose uplink is a veth with the default route; `ip link set down` makes
// the kernel delete that route, and the agent must still report the uplink
// down rather than lose sight of it.
func TestUplinkFoundByItsRouteIsWatchedAfterTheRouteGoes(t *testing.T) {
	ns, _, uplink := vethIntoNamespace(t, "ngu")
	run(t, "ip", "-n", ns, "link", "set", uplink, "up")
	run(t, "ip", "-n", ns, "route", "add", "default", "dev", uplink)

	// `ip netns exec` runs the agent in the namespace with a /sys of the
	// namespace's own, as a host-network pod sees its node.
	config := "checks:\n  nic:\n    period: 500ms\n"
	args := append([]string{"netns", "exec", ns, needAgent(t)}, append(onlyCheck(t, "nic"),
		agentArgs(t, t.TempDir(), config, "--standalone", "--output=json", "--listen-address=off")...)...)
	_, stdout, _ := startProcess(t, "ip", args...)
	waitPrinted := func(status, holding string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			for _, line := range strings.Split(stdout.String(), "\n") {
				if strings.Contains(line, `"condition":"NICDown"`) && strings.Contains(line, `"status":"`+status+`"`) && strings.Contains(line, holding) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no NICDown %s holding %q printed within 15 s; stdout:\n%s", status, holding, stdout.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitPrinted("False", uplink)

	run(t, "ip", "-n", ns, "link", "set", uplink, "down")
	out, err := exec.Command("ip", "-n", ns, "route", "show", "default").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("the default route is still there after the link went down (%v): %q; the test relies on the kernel removing it", err, out)
	}
	waitPrinted("True", uplink+" is down (operstate down")
}
