// Package integration runs nodeguard against a real kube-apiserver and etcd
// built by hack/build-test-binaries.sh, and, as root, against the real
// /dev/kmsg.
package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/nodeguard/nodeguard/internal/testcluster"
)

var (
	cluster    *testcluster.Cluster
	clusterErr error
	agentBin   string
	agentErr   error
)

func TestMain(m *testing.M) {
	cluster, clusterErr = testcluster.Start()
	if clusterErr != nil && !errors.Is(clusterErr, testcluster.ErrNoBinaries) {
		fmt.Fprintln(os.Stderr, "integration: starting the test cluster:", clusterErr)
	}
	binDir, err := os.MkdirTemp("", "nodeguard-bin-")
	if err == nil {
		agentBin = filepath.Join(binDir, "nodeguard")
		args := []string{"build", "-race", "-o", agentBin}
		if _, err := os.Stat("/usr/include/systemd/sd-journal.h"); err == nil {
			args = append(args, "-tags", "journald") // as make build does
		}
		out, err := exec.Command("go", append(args, "github.com/nodeguard/nodeguard/cmd/agent")...).CombinedOutput()
		if err != nil {
			agentErr = fmt.Errorf("building the agent: %v\n%s", err, out)
		}
	} else {
		agentErr = err
	}
	code := m.Run()
	if cluster != nil {
		cluster.Stop()
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

// needCluster skips when the test binaries were not asked for, and fails
// when they were but the cluster did not start.
func needCluster(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if errors.Is(clusterErr, testcluster.ErrNoBinaries) {
		t.Skip(clusterErr.Error())
	}
	if clusterErr != nil {
		t.Fatalf("test cluster: %v", clusterErr)
	}
	return cluster
}

func needAgent(t *testing.T) string {
	t.Helper()
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s", why)
	}
}

// createNode makes a Node whose status holds kubelet-owned conditions, and
// deletes it (and its events) when the test ends.
func createNode(t *testing.T, name string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	c := cluster.Client
	node, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("deleting node %s: %v", name, err)
		}
		sel := fields.OneTermEqualSelector("involvedObject.name", name).String()
		c.CoreV1().Events(metav1.NamespaceDefault).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{FieldSelector: sel})
	})
	beat := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	node.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status", LastHeartbeatTime: beat, LastTransitionTime: beat},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available", LastHeartbeatTime: beat, LastTransitionTime: beat},
	}
	node, err = c.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("setting kubelet conditions on node %s: %v", name, err)
	}
	return node
}

func condition(node *corev1.Node, t string) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if string(node.Status.Conditions[i].Type) == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// waitCondition polls the node until its condition has the status, and
// returns the node and how long it took.
func waitCondition(t *testing.T, name, condType string, status corev1.ConditionStatus, timeout time.Duration) (*corev1.Node, time.Duration) {
	t.Helper()
	return waitConditionIs(t, name, condType, fmt.Sprint(status), timeout, func(c *corev1.NodeCondition) bool { return c.Status == status })
}

// waitConditionIs polls the node until ok holds of its condition (what
// says what ok wants), and returns the node and how long it took.
func waitConditionIs(t *testing.T, name, condType, what string, timeout time.Duration, ok func(*corev1.NodeCondition) bool) (*corev1.Node, time.Duration) {
	t.Helper()
	start := time.Now()
	var last *corev1.Node
	for time.Since(start) < timeout {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		node, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err == nil {
			last = node
			if c := condition(node, condType); c != nil && ok(c) {
				return node, time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	var have []string
	if last != nil {
		for _, c := range last.Status.Conditions {
			have = append(have, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Reason))
		}
		if c := condition(last, condType); c != nil {
			have = append(have, fmt.Sprintf("%s's message: %q", condType, c.Message))
		}
	}
	t.Fatalf("node %s: condition %s did not become %s within %s; conditions: %s", name, condType, what, timeout, strings.Join(have, " "))
	return nil, 0
}

// waitEvent polls for an event on the node with the reason whose message
// holds want, and returns it and how long it took.
func waitEvent(t *testing.T, node, reason, want string, timeout time.Duration) (*corev1.Event, time.Duration) {
	t.Helper()
	start := time.Now()
	sel := fields.AndSelectors(
		fields.OneTermEqualSelector("involvedObject.kind", "Node"),
		fields.OneTermEqualSelector("involvedObject.name", node),
		fields.OneTermEqualSelector("reason", reason),
	).String()
	for time.Since(start) < timeout {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		list, err := cluster.Client.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: sel})
		cancel()
		if err == nil {
			for i := range list.Items {
				if strings.Contains(list.Items[i].Message, want) {
					return &list.Items[i], time.Since(start)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s event on node %s with %q within %s", reason, node, want, timeout)
	return nil, 0
}
