package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/internal/testnode"
)

// The failures nodeguard exists for, caused for real on the node, each
// timed against what the kubelet and the node controller say. They run
// after daemonset_test.go's and before helm_test.go's, on the kustomize
// DaemonSet.

// TestOOMKilledPodNamedOnTheNode runs ns1/memhog, whose container hog has a
// 32Mi limit and touches memory until the kernel's OOM killer ends it, and
// is restarted by the kubelet to be killed again. Each kill is one
// OOMKilling Event on the Node naming the pod and container as the runtime
// does, its UID and container ID as the API server and the kubelet's status
// say.
func TestOOMKilledPodNamedOnTheNode(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	testPodImage(t, n)
	// The flood test before this one spent the agent's event budget for
	// the Node, which refills over minutes: a new pod starts with it whole.
	before := currentPod(t, n)
	if out, err := n.Kubectl(ctx, "-n", namespace, "rollout", "restart", "daemonset/"+dsName); err != nil {
		t.Fatalf("rollout restart: %v\n%s", err, out)
	}
	waitLog(t, n, waitDaemonSetReady(t, n, before.Name), `"nodeguard started"`)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns1"}}
	if _, err := n.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		grace := int64(0)
		n.Client.CoreV1().Pods("ns1").Delete(context.Background(), "memhog", metav1.DeleteOptions{GracePeriodSeconds: &grace})
		n.Client.CoreV1().Namespaces().Delete(context.Background(), "ns1", metav1.DeleteOptions{})
	})
	limit := resource.MustParse("32Mi")
	pod, err := n.Client.CoreV1().Pods("ns1").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "memhog"},
		Spec: corev1.PodSpec{
			NodeName:                      n.Name,
			TerminationGracePeriodSeconds: ptr(int64(0)),
			Containers: []corev1.Container{{
				Name: "hog", Image: testnode.TestPodImage, ImagePullPolicy: corev1.PullNever, Args: []string{"memhog"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: limit}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod ns1/memhog, UID %s", pod.UID)

	// The kubelet's word on each kill: the container ID of each instance
	// it saw end OOMKilled, from lastState after each restart.
	killed := map[string]bool{}
	waitFor(t, 4*time.Minute, "the kubelet reporting two OOM kills of ns1/memhog's hog", func() (bool, string) {
		p, err := n.Client.CoreV1().Pods("ns1").Get(ctx, "memhog", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err)
		}
		cs := p.Status.ContainerStatuses[0]
		for _, st := range []corev1.ContainerState{cs.State, cs.LastTerminationState} {
			if st.Terminated != nil && st.Terminated.Reason == "OOMKilled" {
				killed[strings.TrimPrefix(st.Terminated.ContainerID, "containerd://")] = true
			}
		}
		return len(killed) >= 2, fmt.Sprintf("restarts %d, OOMKilled instances %d", cs.RestartCount, len(killed))
	})
	grace := int64(0)
	if err := n.Client.CoreV1().Pods("ns1").Delete(ctx, "memhog", metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range killed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	t.Logf("the kubelet's OOMKilled container IDs: %v", ids)

	// nodeguard's word: one event per kill, each naming what the kubelet
	// and the API server say.
	var ours []corev1.Event
	waitFor(t, time.Minute, "an OOMKilling Event on the Node for each kill", func() (bool, string) {
		ours = nil
		for _, ev := range nodeEvents(t, n, "OOMKilling") {
			if strings.Contains(ev.Message, "pod UID "+string(pod.UID)) {
				ours = append(ours, ev)
			}
		}
		found := 0
		for _, id := range ids {
			for _, ev := range ours {
				if strings.Contains(ev.Message, "container ID "+id) {
					found++
					break
				}
			}
		}
		return found == len(ids), fmt.Sprintf("%d of %d kills have an event; events: %d", found, len(ids), len(ours))
	})
	perKill := map[string]int32{}
	for _, ev := range ours {
		for _, want := range []string{"; pod ns1/memhog, container hog", "pod UID " + string(pod.UID)} {
			if !strings.Contains(ev.Message, want) {
				t.Errorf("OOMKilling event %q does not say %q", ev.Message, want)
			}
		}
		for _, id := range ids {
			if strings.Contains(ev.Message, "container ID "+id) {
				perKill[id] += max(ev.Count, 1)
			}
		}
	}
	for _, id := range ids {
		if perKill[id] != 1 {
			t.Errorf("kill of container %s: %d OOMKilling events, want exactly one", id, perKill[id])
		}
	}
	for _, ev := range ours {
		t.Logf("event: %s", ev.Message)
	}
}

var (
	importTestPod    sync.Once
	importTestPodErr error
)

// testPodImage imports hack/testpod's image into the node, once.
func testPodImage(t *testing.T, n *testnode.Node) {
	t.Helper()
	importTestPod.Do(func() { importTestPodErr = n.ImportTestPod(context.Background()) })
	if importTestPodErr != nil {
		t.Fatal(importTestPodErr)
	}
}

func ptr[T any](v T) *T { return &v }

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
	// Kernel problems while the server is down: their events wait in the
	// agent's spool and reach the Node after the outage, each once, with
	// the time it happened.
	const problems = 5
	written := map[string]time.Time{}
	time.Sleep(20 * time.Second)
	for i := range problems {
		task := fmt.Sprintf("ngspool-%d:%d", i, 40000+i)
		line := fmt.Sprintf("<3>kernel: INFO: task %s blocked for more than 120 seconds.", task)
		if err := os.WriteFile("/dev/kmsg", []byte(line+"\n"), 0); err != nil {
			t.Fatalf("writing /dev/kmsg: %v", err)
		}
		written[task] = time.Now()
		time.Sleep(2 * time.Second)
	}
	time.Sleep(time.Until(stopped.Add(60 * time.Second)))
	if err := n.Cluster.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	t.Logf("kube-apiserver down %.0f s (stopped, then started again)", back.Sub(stopped).Seconds())
	defer func() {
		if t.Failed() {
			return
		}
		// The event rate limit (burst 25, then one per 30 s) may hold them
		// a while after the earlier tests' events.
		// When the last reached the API server: its creation time there
		// (whole seconds), as this wait begins only after the lease's.
		var delivered time.Time
		waitFor(t, 6*time.Minute, "the outage's kernel problems as events on the Node", func() (bool, string) {
			seen := map[string]int32{}
			var wrong []string
			for _, ev := range nodeEvents(t, n, "TaskHung") {
				for task, at := range written {
					if !strings.Contains(ev.Message, "task "+task+" ") {
						continue
					}
					seen[task] += max(ev.Count, 1)
					if c := ev.CreationTimestamp.Time; c.After(delivered) {
						delivered = c
					}
					if first := ev.FirstTimestamp.Time; first.Before(at.Add(-2*time.Second)) || first.After(at.Add(2*time.Second)) {
						wrong = append(wrong, fmt.Sprintf("%s first at %s, written at %s", task, first.Format(time.RFC3339), at.Format(time.RFC3339)))
					}
				}
			}
			if len(wrong) > 0 {
				t.Fatalf("spooled events lost their times: %s", strings.Join(wrong, "; "))
			}
			for task, c := range seen {
				if c > 1 {
					t.Fatalf("the event of %s is on the Node %d times", task, c)
				}
			}
			return len(seen) == problems, fmt.Sprintf("%d of %d", len(seen), problems)
		})
		t.Logf("FIGURE control-plane outage 60 s: %d kernel problems written during it all on the Node as events with their times, the last created %.0f s after the server's return", problems, delivered.Sub(back).Seconds())
	}()
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
// ("container runtime is down"), and both recover on SIGCONT. The kubelet's
// PLEG verdict (3 minutes of relists that never return) shows only in its
// log: the Node's Ready names the first of its errors.
func TestRuntimeHungAheadOfTheKubelet(t *testing.T) {
	n := needNode(t)
	// The kernel-log rule for a hung runtime task holds the same condition
	// True for 10 minutes after the earlier tests' hung-task record; the
	// CRI check's own part is the message of a call that failed.
	criFailing := func(c *corev1.NodeCondition) bool {
		return c != nil && c.Status == corev1.ConditionTrue && strings.Contains(c.Message, "CRI ")
	}
	if c := condition(t, n, "ContainerRuntimeUnresponsive"); criFailing(&c) {
		t.Fatalf("the CRI check fails before the test: %s", c.Message)
	}
	tl := watchNode(t, n, map[string]func(*corev1.Node) string{
		"nodeguard": func(node *corev1.Node) string {
			if c := nodeCondition(node, "ContainerRuntimeUnresponsive"); criFailing(c) {
				return c.Reason + ": " + c.Message
			}
			return ""
		},
		"kubelet": conditionIsNot("Ready", corev1.ConditionTrue),
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
	if err := n.Signal("containerd", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	cont := time.Now()
	waitFor(t, 3*time.Minute, "Ready True and the CRI check healthy after SIGCONT", func() (bool, string) {
		r, c := condition(t, n, "Ready"), condition(t, n, "ContainerRuntimeUnresponsive")
		return r.Status == corev1.ConditionTrue && !criFailing(&c),
			fmt.Sprintf("Ready %s (%s), ContainerRuntimeUnresponsive %s (%s)", r.Status, r.Message, c.Status, c.Message)
	})
	t.Logf("both recovered %.0f s after SIGCONT", time.Since(cont).Seconds())

	t.Logf("FIGURE runtime hung: nodeguard ContainerRuntimeUnresponsive True at %.1f s (%s)", ours.at.Sub(stopped).Seconds(), ours.detail)
	t.Logf("FIGURE runtime hung: kubelet Ready=False at %.1f s (%s)", kubelet.at.Sub(stopped).Seconds(), kubelet.detail)
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

// diskTaint is the taint the frozen-disk test has remediation.taints put
// on the Node for DiskIOStuck.
const diskTaint = "nodeguard.io/disk-io-stuck"

// TestKubeletDirFrozenWhileReady freezes the filesystem of the kubelet's
// root dir (a loop-mounted ext4, internal/testnode) as a dead disk would
// stop: the kubelet goes on posting Ready=True, a pod's writes to its
// emptyDir hang, and nodeguard sets DiskIOStuck=True. With
// remediation.taints on, the Node is tainted, a new pod without a
// toleration stays Pending with the scheduler naming the taint, and on thaw
// the taint goes and the pod schedules.
func TestKubeletDirFrozenWhileReady(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	testPodImage(t, n)
	withRemediationTaints(t, n, "DiskIOStuck", diskTaint)
	if c := condition(t, n, "DiskIOStuck"); c.Status != corev1.ConditionFalse {
		t.Fatalf("DiskIOStuck is %s before the test: %s", c.Status, c.Message)
	}

	writer := runTestPod(t, n, "emptydir-writer", []string{"write", "/data/probe"}, nil, true)
	wrote := func() int {
		log, _ := n.PodLogs("default", writer.Name, string(writer.UID), "main")
		return strings.Count(log, "wrote ")
	}
	waitFor(t, time.Minute, "the writer pod writing to its emptyDir", func() (bool, string) { return wrote() >= 2, fmt.Sprint(wrote(), " writes") })

	tl := watchNode(t, n, map[string]func(*corev1.Node) string{
		"stuck":    conditionIs("DiskIOStuck", corev1.ConditionTrue),
		"notReady": conditionIsNot("Ready", corev1.ConditionTrue),
		"tainted": func(node *corev1.Node) string {
			for _, tn := range node.Spec.Taints {
				if tn.Key == diskTaint {
					return tn.ToString()
				}
			}
			return ""
		},
	})
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			n.ThawKubeletDir()
		}
	})
	frozen := time.Now()
	if err := n.FreezeKubeletDir(); err != nil {
		t.Fatal(err)
	}
	stuck := tl.wait(t, "stuck", 3*time.Minute)
	tainted := tl.wait(t, "tainted", time.Minute)
	// Writes that were under way when it froze may finish; none after.
	hung := wrote()
	late := runTestPod(t, n, "untolerated", []string{"write", "/tmp/probe"}, nil, false)
	var scheduling string
	waitFor(t, 2*time.Minute, "the scheduler's FailedScheduling event for the untolerated pod", func() (bool, string) {
		for _, ev := range events(t, n, late.Name, "FailedScheduling") {
			scheduling = ev.Message
			return true, ""
		}
		p, err := n.Client.CoreV1().Pods("default").Get(ctx, late.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("no FailedScheduling event; the pod is %s on %q", p.Status.Phase, p.Spec.NodeName)
	})
	if !strings.Contains(scheduling, "taint") {
		t.Errorf("the scheduler's reason does not name a taint: %s", scheduling)
	} else if !strings.Contains(scheduling, diskTaint) {
		t.Logf("the scheduler says a taint but not which (its message leaves the key out): %s", scheduling)
	}
	if p, err := n.Client.CoreV1().Pods("default").Get(ctx, late.Name, metav1.GetOptions{}); err != nil || p.Spec.NodeName != "" {
		t.Errorf("the untolerated pod was bound to %q while the Node was tainted (%v)", p.Spec.NodeName, err)
	}
	if after := wrote(); after > hung {
		t.Errorf("the writer wrote %d times to its emptyDir on the frozen filesystem", after-hung)
	}
	// Long enough for the kubelet to post its status several times (every
	// 10 s) on a node whose disk is dead.
	if rest := time.Minute - time.Since(frozen); rest > 0 {
		time.Sleep(rest)
	}
	frozenFor := time.Since(frozen)

	if err := n.ThawKubeletDir(); err != nil {
		t.Fatal(err)
	}
	thawed = true
	thaw := time.Now()
	waitFor(t, 3*time.Minute, "DiskIOStuck False, the taint gone, the untolerated pod running and the writer writing", func() (bool, string) {
		c := condition(t, n, "DiskIOStuck")
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		taintGone := !slices.ContainsFunc(node.Spec.Taints, func(tn corev1.Taint) bool { return tn.Key == diskTaint })
		p, err := n.Client.CoreV1().Pods("default").Get(ctx, late.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return c.Status == corev1.ConditionFalse && taintGone && p.Status.Phase == corev1.PodRunning && wrote() > hung+1,
			fmt.Sprintf("DiskIOStuck %s, taint gone %v, pod %s, writes %d since the freeze", c.Status, taintGone, p.Status.Phase, wrote()-hung)
	})
	recovered := time.Since(thaw)
	if m, ok := tl.waitMaybe("notReady", 0); ok {
		t.Errorf("Ready left True %.1f s after the freeze: %s", m.at.Sub(frozen).Seconds(), m.detail)
	}
	t.Logf("stuck: %s", stuck.detail)
	t.Logf("scheduler: %s", scheduling)
	t.Logf("FIGURE frozen kubelet dir: nodeguard DiskIOStuck True at %.1f s, taint %s at %.1f s", stuck.at.Sub(frozen).Seconds(), tainted.detail, tainted.at.Sub(frozen).Seconds())
	t.Logf("FIGURE frozen kubelet dir: Ready stayed True through %.0f s frozen; all recovered %.1f s after thaw", frozenFor.Seconds(), recovered.Seconds())
}

// runTestPod starts hack/testpod with args in the default namespace, with an
// emptyDir at /data when emptyDir, and tolerations; it waits for it to run
// unless it is expected to stay Pending. The pod is deleted at the end.
func runTestPod(t *testing.T, n *testnode.Node, name string, args []string, tolerations []corev1.Toleration, wait bool) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr(int64(0)),
		Tolerations:                   tolerations,
		Containers:                    []corev1.Container{{Name: "main", Image: testnode.TestPodImage, ImagePullPolicy: corev1.PullNever, Args: args}},
	}
	if wait {
		spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	}
	pod, err := n.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	})
	if wait {
		waitFor(t, 2*time.Minute, "pod "+name+" running", func() (bool, string) {
			p, err := n.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
		})
	}
	return pod
}

// withRemediationTaints redeploys the DaemonSet as deploy/remediation's RBAC
// and the shipped config with remediation.taints for condition allow, and
// puts the plain deployment back at the end.
func withRemediationTaints(t *testing.T, n *testnode.Node, condition, key string) {
	t.Helper()
	ctx := context.Background()
	base := kustomizeOverlay(t)
	dir := t.TempDir()
	rbac, err := os.ReadFile(filepath.Join(repo, "deploy/remediation/rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(repo, "deploy/base/config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, fmt.Sprintf("remediation:\n  taints:\n    - {condition: %s, key: %s, effect: NoSchedule}\n", condition, key)...)
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
  - rbac.yaml
configMapGenerator:
  - name: nodeguard
    namespace: nodeguard
    behavior: merge
    files:
      - config.yaml
`, rel)
	for name, b := range map[string][]byte{"rbac.yaml": rbac, "config.yaml": cfg, "kustomization.yaml": []byte(kustomization)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := currentPod(t, n)
	if out, err := n.Kubectl(ctx, "apply", "-k", dir); err != nil {
		t.Fatalf("kubectl apply -k (remediation): %v\n%s", err, out)
	}
	pod := waitDaemonSetReady(t, n, before.Name)
	waitLog(t, n, pod, `"nodeguard started"`)
	mounted, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/nodeguard/config.yaml", agentPID(t, n, pod)))
	if err != nil || !strings.Contains(string(mounted), key) {
		t.Fatalf("the new pod's config does not have the taint %s (%v):\n%s", key, err, mounted)
	}
	t.Cleanup(func() {
		before := currentPod(t, n)
		if out, err := n.Kubectl(ctx, "apply", "-k", base); err != nil {
			t.Errorf("kubectl apply -k (back to the plain deployment): %v\n%s", err, out)
		}
		if out, err := n.Kubectl(ctx, "delete", "clusterrole,clusterrolebinding", "nodeguard-remediation", "--ignore-not-found"); err != nil {
			t.Errorf("deleting the remediation RBAC: %v\n%s", err, out)
		}
		waitDaemonSetReady(t, n, before.Name)
	})
}

// TestKubeletCutOffWhileTheNodeLives is kubernetes/kubernetes#87615: the
// kubelet's connection to the API server goes dead (the test's relay stops
// forwarding without closing it) while the node and the agent's own
// connection are fine. nodeguard's KubeletLeaseStale is timed against the
// node controller's Ready=Unknown (kube-controller-manager's default
// node-monitor-grace-period). Then the whole node is cut off, the agent
// too: KubeletLeaseStale must not be raised, and once the server is
// reachable again the agent reports the outage as APIServerUnreachable.
func TestKubeletCutOffWhileTheNodeLives(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	if c := condition(t, n, "KubeletLeaseStale"); c.Status != corev1.ConditionFalse {
		t.Fatalf("KubeletLeaseStale is %s before the test: %s", c.Status, c.Message)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			n.KubeletRelay.Heal()
		}
	})

	t.Run("the kubelet alone", func(t *testing.T) {
		tl := watchNode(t, n, map[string]func(*corev1.Node) string{
			"nodeguard":      conditionIs("KubeletLeaseStale", corev1.ConditionTrue),
			"nodeController": conditionIs("Ready", corev1.ConditionUnknown),
		})
		cut := time.Now()
		n.KubeletRelay.Blackhole()
		ours := tl.wait(t, "nodeguard", 2*time.Minute)
		nc := tl.wait(t, "nodeController", 3*time.Minute)
		// The kubelet's own words, from its unit's journal entries, as
		// events: the agent's connection is healthy, so they are on the
		// Node while the kubelet is still cut off.
		said := map[string]time.Time{}
		kubeletSaid := map[string]string{
			"KubeletLeaseUpdateFailed":      "ailed to update lease",
			"KubeletNodeStatusUpdateFailed": "rror updating node status",
		}
		waitFor(t, 2*time.Minute, "the kubelet's lease and node status failures as events on the Node", func() (bool, string) {
			var missing []string
			for reason, words := range kubeletSaid {
				for _, ev := range nodeEvents(t, n, reason) {
					at := ev.FirstTimestamp.Time
					if at.IsZero() {
						at = ev.EventTime.Time
					}
					if at.After(cut) && strings.Contains(ev.Message, words) {
						if _, ok := said[reason]; !ok {
							said[reason] = at
							t.Logf("%s: %s", reason, ev.Message)
						}
					}
				}
				if _, ok := said[reason]; !ok {
					missing = append(missing, reason)
				}
			}
			return len(missing) == 0, "no event since the cut: " + strings.Join(missing, ", ")
		})
		n.KubeletRelay.Heal()
		healed = true
		heal := time.Now()
		waitFor(t, 3*time.Minute, "Ready True and KubeletLeaseStale False after the relay healed", func() (bool, string) {
			r, l := condition(t, n, "Ready"), condition(t, n, "KubeletLeaseStale")
			return r.Status == corev1.ConditionTrue && l.Status == corev1.ConditionFalse,
				fmt.Sprintf("Ready %s (%s), KubeletLeaseStale %s (%s)", r.Status, r.Message, l.Status, l.Message)
		})
		if !strings.Contains(ours.detail, "while this agent reaches the API server") {
			t.Errorf("KubeletLeaseStale does not say the agent reaches the API server: %s", ours.detail)
		}
		t.Logf("nodeguard: %s", ours.detail)
		t.Logf("node controller: %s", nc.detail)
		t.Logf("FIGURE kubelet cut off: nodeguard KubeletLeaseStale True at %.1f s, node controller Ready=Unknown at %.1f s, lead %.1f s; both recovered %.1f s after the heal",
			ours.at.Sub(cut).Seconds(), nc.at.Sub(cut).Seconds(), nc.at.Sub(ours.at).Seconds(), time.Since(heal).Seconds())
		t.Logf("FIGURE kubelet cut off: the kubelet's own lines as events, KubeletLeaseUpdateFailed logged at %.1f s, KubeletNodeStatusUpdateFailed at %.1f s",
			said["KubeletLeaseUpdateFailed"].Sub(cut).Seconds(), said["KubeletNodeStatusUpdateFailed"].Sub(cut).Seconds())
		if !ours.at.Before(nc.at) {
			t.Errorf("the node controller's Ready=Unknown (%.1f s) came before nodeguard's KubeletLeaseStale (%.1f s)", nc.at.Sub(cut).Seconds(), ours.at.Sub(cut).Seconds())
		}
	})

	t.Run("the whole node", func(t *testing.T) {
		// The agent reaches the API server as the kubernetes Service's
		// address; pointed at a relay of its own, it can be cut off too.
		agentRelay, err := testnode.NewRelay(net.JoinHostPort(n.Cluster.Host, "0"), net.JoinHostPort(n.Cluster.Host, strconv.Itoa(n.Cluster.APIPort)))
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(agentRelay.Addr())
		before := currentPod(t, n)
		if out, err := n.Kubectl(ctx, "-n", namespace, "set", "env", "daemonset/"+dsName, "KUBERNETES_SERVICE_HOST="+n.Cluster.Host, "KUBERNETES_SERVICE_PORT="+port); err != nil {
			t.Fatalf("kubectl set env: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			before := currentPod(t, n)
			if out, err := n.Kubectl(ctx, "-n", namespace, "set", "env", "daemonset/"+dsName, "KUBERNETES_SERVICE_HOST-", "KUBERNETES_SERVICE_PORT-"); err != nil {
				t.Errorf("kubectl set env (back): %v\n%s", err, out)
			}
			waitDaemonSetReady(t, n, before.Name)
			agentRelay.Close()
		})
		pod := waitDaemonSetReady(t, n, before.Name)
		waitFor(t, time.Minute, "KubeletLeaseStale False from the relayed agent", func() (bool, string) {
			c := condition(t, n, "KubeletLeaseStale")
			return c.Status == corev1.ConditionFalse && c.LastHeartbeatTime.After(pod.CreationTimestamp.Time), c.Message
		})
		logs := func() string {
			b, _ := n.PodLogs(namespace, pod.Name, string(pod.UID), "nodeguard")
			return b
		}
		stale := regexp.MustCompile(`(?m)^.*"condition":"KubeletLeaseStale","status":"True".*$`)
		seen := len(stale.FindAllString(logs(), -1))

		cut := time.Now()
		healed = false
		n.KubeletRelay.Blackhole()
		agentRelay.Blackhole()
		time.Sleep(2 * time.Minute)
		n.KubeletRelay.Heal()
		agentRelay.Heal()
		healed = true
		heal := time.Now()
		var (
			outage   corev1.Event
			reported time.Duration
		)
		waitFor(t, 3*time.Minute, "an APIServerUnreachable Event on the Node after the partition", func() (bool, string) {
			for _, ev := range nodeEvents(t, n, "APIServerUnreachable") {
				if ev.LastTimestamp.After(cut) || ev.EventTime.After(cut) {
					outage, reported = ev, time.Since(heal)
					return true, ""
				}
			}
			return false, "none since the cut"
		})
		waitFor(t, 3*time.Minute, "Ready True after the partition", func() (bool, string) {
			r := condition(t, n, "Ready")
			return r.Status == corev1.ConditionTrue, r.Message
		})
		// A healthy kubelet renews soon after: long enough for a false
		// verdict to have shown.
		time.Sleep(30 * time.Second)
		if all := stale.FindAllString(logs(), -1); len(all) > seen {
			t.Errorf("the agent set KubeletLeaseStale True across the partition (cut at %s, healed at %s): %s",
				cut.UTC().Format(time.RFC3339), heal.UTC().Format(time.RFC3339), all[len(all)-1])
		}
		if c := condition(t, n, "KubeletLeaseStale"); c.Status != corev1.ConditionFalse {
			t.Errorf("KubeletLeaseStale is %s after the partition: %s", c.Status, c.Message)
		}
		t.Logf("FIGURE whole node cut off 120 s: no KubeletLeaseStale; APIServerUnreachable event %.1f s after the heal: %s",
			reported.Seconds(), outage.Message)
	})
}
