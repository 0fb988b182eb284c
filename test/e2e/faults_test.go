package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/internal/testnode"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The failures nodeguard exists for, caused for real on the node, each
// timed against what the kubelet and the node controller say. They run
// after daemonset_test.go's and before helm_test.go's, on the kustomize
// DaemonSet.

// TestNoLeaseVerdictAfterAControlPlaneOutage stops the API server for 60 s,
// longer than the kubelet's 40 s Lease, and starts it again. No kubelet could
// renew meanwhile, on any node: KubeletLeaseStale must not be raised while
// the real kubelet renews on its next try.
func TestNoLeaseVerdictAfterAControlPlaneOutage(t *testing.T) {
	n := needNode(t)
	// The stop is graceful: for its drain (18 s here) the server refuses
	// the kubelet's renewals while the agent's open watch stays quiet.
	ctx := context.Background()
	pod := currentPod(t, n)
	if c := condition(t, n, "KubeletLeaseStale"); c.Status != corev1.ConditionFalse {
		t.Fatalf("KubeletLeaseStale is %s before the outage: %s", c.Status, c.Message)
	}
	// Whole lines, for the time the agent logged with each.
	stale := regexp.MustCompile(`(?m)^.*"condition":"KubeletLeaseStale","status":"True".*$`)
	logs := func() string {
		b, _ := n.PodLogs(namespace, pod.Name, string(pod.UID), "nodeguard")
		return b
	}
	before := len(stale.FindAllString(logs(), -1))
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			n.Cluster.StartAPIServer()
		}
	})
	stopped := time.Now()
	if err := n.Cluster.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Second)
	if err := n.Cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	t.Logf("kube-apiserver down %.0f s (stopped, then started again)", back.Sub(stopped).Seconds())
	var renewed time.Duration
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if renewed == 0 {
			if l, err := n.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, n.Name, metav1.GetOptions{}); err == nil &&
				l.Spec.RenewTime != nil && l.Spec.RenewTime.After(back) {
				renewed = l.Spec.RenewTime.Sub(back)
			}
		}
		if c := condition(t, n, "KubeletLeaseStale"); c.Status == corev1.ConditionTrue {
			t.Fatalf("KubeletLeaseStale True %.0f s after the API server came back: %s", time.Since(back).Seconds(), c.Message)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if renewed == 0 {
		t.Fatalf("the kubelet did not renew its Lease in 90 s after the API server came back; kubelet log:\n%s", n.Log("kubelet"))
	}
	t.Logf("the kubelet renewed its Lease %.1f s after the API server came back", renewed.Seconds())
	if after := stale.FindAllString(logs(), -1); len(after) > before {
		t.Errorf("the agent set KubeletLeaseStale True across the outage (stopped at %s, back at %s): %s",
			stopped.UTC().Format(time.RFC3339Nano), back.UTC().Format(time.RFC3339Nano), after[len(after)-1])
	}
}

// TestRuntimeHungAheadOfTheKubelet stops containerd with SIGSTOP, as a
// deadlocked runtime: its socket accepts and nothing answers. nodeguard's
// ContainerRuntimeUnresponsive is timed against the kubelet's Ready=False
// (the runtime's status gone quiet, later PLEG), and both recover on
// SIGCONT.
func TestRuntimeHungAheadOfTheKubelet(t *testing.T) {
	n := needNode(t)
	if c := condition(t, n, "ContainerRuntimeUnresponsive"); c.Status != corev1.ConditionFalse {
		t.Fatalf("ContainerRuntimeUnresponsive is %s before the test: %s", c.Status, c.Message)
	}
	tl := watchNode(t, n, map[string]func(*corev1.Node) string{
		"nodeguard": conditionIs("ContainerRuntimeUnresponsive", corev1.ConditionTrue),
		"kubelet":   conditionIsNot("Ready", corev1.ConditionTrue),
		"pleg": func(node *corev1.Node) string {
			if c := nodeCondition(node, "Ready"); c != nil && strings.Contains(c.Message, "PLEG") {
				return c.Message
			}
			return ""
		},
	})
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			n.Signal("containerd", syscall.SIGCONT)
		}
	})
	stopped := time.Now()
	if err := n.Signal("containerd", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ours := tl.wait(t, "nodeguard", 3*time.Minute)
	kubelet := tl.wait(t, "kubelet", 5*time.Minute)
	// PLEG's own verdict comes at 3 minutes of relists that never return.
	pleg, plegSeen := tl.waitMaybe("pleg", 4*time.Minute-time.Since(stopped))
	if err := n.Signal("containerd", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	cont := time.Now()
	waitFor(t, 3*time.Minute, "Ready True and ContainerRuntimeUnresponsive False after SIGCONT", func() (bool, string) {
		r, c := condition(t, n, "Ready"), condition(t, n, "ContainerRuntimeUnresponsive")
		return r.Status == corev1.ConditionTrue && c.Status == corev1.ConditionFalse,
			fmt.Sprintf("Ready %s (%s), ContainerRuntimeUnresponsive %s (%s)", r.Status, r.Message, c.Status, c.Message)
	})
	t.Logf("both recovered %.0f s after SIGCONT", time.Since(cont).Seconds())

	t.Logf("FIGURE runtime hung: nodeguard ContainerRuntimeUnresponsive True at %.1f s (%s)", ours.at.Sub(stopped).Seconds(), ours.detail)
	t.Logf("FIGURE runtime hung: kubelet Ready=False at %.1f s (%s)", kubelet.at.Sub(stopped).Seconds(), kubelet.detail)
	if plegSeen {
		t.Logf("FIGURE runtime hung: kubelet's PLEG not healthy at %.1f s", pleg.at.Sub(stopped).Seconds())
	} else {
		t.Logf("the kubelet's Ready never named PLEG in 4 minutes")
	}
	t.Logf("FIGURE runtime hung: nodeguard's lead over Ready=False %.1f s", kubelet.at.Sub(ours.at).Seconds())
	if !ours.at.Before(kubelet.at) {
		t.Errorf("the kubelet's Ready=False (%.1f s) came before nodeguard's ContainerRuntimeUnresponsive (%.1f s)",
			kubelet.at.Sub(stopped).Seconds(), ours.at.Sub(stopped).Seconds())
	}
}

// mark is when a timeline's predicate first held, and what it said then.
type mark struct {
	at     time.Time
	detail string
}

// timeline records when each of its predicates first held on the Node.
type timeline struct {
	mu    sync.Mutex
	marks map[string]mark
}

// watchNode reads the Node every 250 ms until the test ends, and records
// the first time each predicate returns something other than "".
func watchNode(t *testing.T, n *testnode.Node, preds map[string]func(*corev1.Node) string) *timeline {
	tl := &timeline{marks: map[string]mark{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			reqCtx, cancelReq := context.WithTimeout(ctx, 5*time.Second)
			node, err := n.Client.CoreV1().Nodes().Get(reqCtx, n.Name, metav1.GetOptions{})
			cancelReq()
			if err == nil {
				now := time.Now()
				tl.mu.Lock()
				for name, pred := range preds {
					if _, ok := tl.marks[name]; !ok {
						if d := pred(node); d != "" {
							tl.marks[name] = mark{now, d}
						}
					}
				}
				tl.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return tl
}

// wait returns the mark name, failing the test when it has not come
// within timeout.
func (tl *timeline) wait(t *testing.T, name string, timeout time.Duration) mark {
	t.Helper()
	m, ok := tl.waitMaybe(name, timeout)
	if !ok {
		t.Fatalf("no %s verdict in %s", name, timeout)
	}
	return m
}

func (tl *timeline) waitMaybe(name string, timeout time.Duration) (mark, bool) {
	deadline := time.Now().Add(timeout)
	for {
		tl.mu.Lock()
		m, ok := tl.marks[name]
		tl.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return m, ok
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func nodeCondition(node *corev1.Node, typ string) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if string(node.Status.Conditions[i].Type) == typ {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

// conditionIs holds while condition typ has status, and says its reason
// and message.
func conditionIs(typ string, status corev1.ConditionStatus) func(*corev1.Node) string {
	return func(node *corev1.Node) string {
		if c := nodeCondition(node, typ); c != nil && c.Status == status {
			return c.Reason + ": " + c.Message
		}
		return ""
	}
}

func conditionIsNot(typ string, status corev1.ConditionStatus) func(*corev1.Node) string {
	return func(node *corev1.Node) string {
		if c := nodeCondition(node, typ); c != nil && c.Status != status {
			return string(c.Status) + " " + c.Reason + ": " + c.Message
		}
		return ""
	}
}
