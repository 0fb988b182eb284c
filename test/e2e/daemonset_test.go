package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/nodeguard/nodeguard/internal/testnode"
)

const (
	namespace = "nodeguard"
	dsName    = "nodeguard"
	// The agent's address on the node: hostNetwork, and the node's IP.
	metricsURL = "http://127.0.0.1:9102"
)

// TestKustomizeDaemonSet deploys `kubectl apply -k deploy/` with the image
// reference set by kustomize, and checks what the agent does in its pod.
func TestKustomizeDaemonSet(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	overlay := kustomizeOverlay(t)
	if out, err := n.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatalf("kubectl apply -k: %v\n%s", err, out)
	}
	pod := waitDaemonSetReady(t, n, "")
	t.Logf("pod %s is Ready on %s", pod.Name, n.Name)

	t.Run("securityContext as shipped", func(t *testing.T) {
		sc := pod.Spec.Containers[0].SecurityContext
		if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Fatalf("the pod's securityContext is not deploy/base's unprivileged one: %+v", sc)
		}
		// What the kernel says of the running process, not the spec: no
		// effective capability.
		pid := agentPID(t, n, pod)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if m := regexp.MustCompile(`CapEff:\s*(\S+)`).FindSubmatch(status); m == nil || strings.Trim(string(m[1]), "0") != "" {
			t.Errorf("the agent (pid %d) has effective capabilities %q, want none", pid, m)
		}
	})

	t.Run("kernel log from the journal", func(t *testing.T) {
		if !n.Journald {
			t.Skip("no systemd-journald runs for the node; deploy/devkmsg is the way here")
		}
		waitLog(t, n, pod, `"reading the kernel log".*"source":"journal"`)
	})

	t.Run("healthz and metrics on the node's address", func(t *testing.T) {
		if body := get(t, metricsURL+"/healthz"); !strings.Contains(strings.ToLower(body), "ok") {
			t.Errorf("/healthz said %q", body)
		}
		m := get(t, metricsURL+"/metrics")
		for _, check := range []string{"kmsg", "cri", "disk", "nic", "memcg", "lease", "dns", "kubelet", "pstore", "plugins"} {
			if !strings.Contains(m, `nodeguard_check_running{check="`+check+`"} 1`) {
				t.Errorf("check %s is not running in the pod; metrics:\n%s", check, grep(m, "nodeguard_check_running"))
			}
		}
	})

	t.Run("every owned condition False with a healthy reason", func(t *testing.T) {
		owned := ownedConditions(t)
		waitFor(t, 2*time.Minute, "every owned condition on the Node, False", func() (bool, string) {
			node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			got := map[string]corev1.NodeCondition{}
			for _, c := range node.Status.Conditions {
				got[string(c.Type)] = c
			}
			var bad []string
			for _, typ := range owned {
				c, ok := got[typ]
				switch {
				case !ok:
					bad = append(bad, typ+" missing")
				case c.Status != corev1.ConditionFalse || c.Reason == "":
					bad = append(bad, fmt.Sprintf("%s=%s (%s: %s)", typ, c.Status, c.Reason, c.Message))
				}
			}
			return len(bad) == 0, strings.Join(bad, "; ")
		})
		t.Logf("%d condition types, all False: %s", len(owned), strings.Join(owned, ", "))
		// Seen once in this pod, 1 s after start, and never on the host:
		// the Lease judged missing before the watch delivered it.
		if logs, err := n.PodLogs(namespace, pod.Name, string(pod.UID), "nodeguard"); err == nil {
			if m := regexp.MustCompile(`.*"condition":"KubeletLeaseStale","status":"True".*`).FindString(logs); m != "" {
				t.Logf("KubeletLeaseStale was True at start: %s", m)
			}
		}
		out, _ := n.Kubectl(ctx, "describe", "node", n.Name)
		t.Logf("kubectl describe node:\n%s", out)
	})

	t.Run("the CRI socket through its mount", func(t *testing.T) {
		// A probe's verdict (Version, Status and ListPodSandbox answered
		// over the mounted socket), not the default published at start.
		waitLog(t, n, pod, `"check":"cri","reason":"ContainerRuntimeIsResponsive"`)
		if m := get(t, metricsURL+"/metrics"); metric(m, `nodeguard_check_errors_total{check="cri",how="error"}`) > 0 {
			t.Errorf("the cri check failed: %s", grep(m, `check="cri"`))
		}
		// The sandbox probe, at start: a sandbox of the node's own pause
		// image started and removed through the real runtime, and none
		// of its sandboxes left behind.
		waitLog(t, n, pod, `"check":"cri".*starts and removes a pod sandbox of `+regexp.QuoteMeta(testnode.PauseImage))
		if left := probeSandboxes(t, n); len(left) > 0 {
			t.Errorf("the sandbox probe left sandboxes behind: %v", left)
		}
	})

	t.Run("of the kubelet's dir only the probe dir and the config", func(t *testing.T) {
		// The container's view, through /proc/PID/root: another pod's
		// volumes (here the agent's own projected token, which the host
		// has) are not there, and the kubelet's config is read-only.
		root := fmt.Sprintf("/proc/%d/root", agentPID(t, n, pod))
		volumes := "/var/lib/kubelet/pods/" + string(pod.UID) + "/volumes"
		if _, err := os.Stat(n.HostPath(volumes)); err != nil {
			t.Fatalf("the host has no %s to compare with: %v", volumes, err)
		}
		for _, dir := range []string{volumes, "/var/lib/kubelet/pods"} {
			if _, err := os.Stat(root + dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the agent's container sees %s (%v): it should not hold the kubelet's root dir", dir, err)
			}
		}
		if b, err := os.ReadFile(root + "/var/lib/kubelet/config.yaml"); err != nil || !strings.Contains(string(b), "clusterDNS") {
			t.Errorf("the kubelet's config in the container: %v, %.80q", err, b)
		}
		if f, err := os.OpenFile(root+"/var/lib/kubelet/config.yaml", os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
			if err == nil {
				f.Close()
			}
			t.Errorf("opening the kubelet's config for writing in the container: %v, want EROFS", err)
		}
	})

	t.Run("the disk probe where the config says", func(t *testing.T) {
		// deploy/base probes a directory of its own in /var/lib/kubelet,
		// on the filesystem of pods' emptyDirs.
		waitLog(t, n, pod, `"check":"disk","reason":"DiskIOIsFlowing"`)
		// The probe makes and removes .nodeguard-probe there every period:
		// the directory's mtime moves with each.
		dir := n.HostPath("/var/lib/kubelet/nodeguard")
		start := time.Now()
		waitFor(t, time.Minute, "the disk probe writing in "+dir, func() (bool, string) {
			st, err := os.Stat(dir)
			if err != nil {
				return false, err.Error()
			}
			return st.ModTime().After(start), "mtime " + st.ModTime().String()
		})
	})

	hungPID := 4100 + os.Getpid()%500
	t.Run("a kernel record becomes an Event on the Node", func(t *testing.T) {
		writeHungTask(t, n, hungPID)
	})

	t.Run("its evidence, in a bundle made inside the pod", func(t *testing.T) {
		evidenceOfTheHungTask(t, n, hungPID)
	})
}

// writeHungTask writes a hung-task record of containerd's to /dev/kmsg
// and waits for its TaskHung Event and KernelDeadlock=True.
func writeHungTask(t *testing.T, n *testnode.Node, pid int) {
	t.Helper()
	// Written from user space, the record has the user facility, and
	// journald would take "INFO" for its syslog identifier; the "kernel: "
	// prefix makes journald store it as it stores the kernel's own
	// (SYSLOG_IDENTIFIER=kernel, MESSAGE=INFO: task ...).
	line := fmt.Sprintf("<3>kernel: INFO: task containerd:%d blocked for more than 120 seconds.", pid)
	if err := os.WriteFile("/dev/kmsg", []byte(line+"\n"), 0); err != nil {
		t.Fatalf("writing /dev/kmsg: %v", err)
	}
	want := fmt.Sprintf("containerd:%d", pid)
	waitFor(t, 2*time.Minute, "a TaskHung event naming "+want, func() (bool, string) {
		evs := nodeEvents(t, n, "TaskHung")
		for _, e := range evs {
			if strings.Contains(e.Message, want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d TaskHung events", len(evs))
	})
	waitFor(t, time.Minute, "KernelDeadlock=True", func() (bool, string) {
		c := condition(t, n, "KernelDeadlock")
		return c.Status == corev1.ConditionTrue, fmt.Sprintf("%+v", c)
	})
	// The kmsg rule runtime-task-hung: a hung containerd is an
	// unresponsive runtime too, whatever the CRI probe says.
	waitFor(t, time.Minute, "ContainerRuntimeUnresponsive=True naming "+want, func() (bool, string) {
		c := condition(t, n, "ContainerRuntimeUnresponsive")
		return c.Status == corev1.ConditionTrue && strings.Contains(c.Message, want), fmt.Sprintf("%+v", c)
	})
}

// TestLivenessProbeRestartsStoppedAgent stops the agent's process; the
// kubelet's liveness probe must restart the container, and a True
// condition must stay True through it.
func TestLivenessProbeRestartsStoppedAgent(t *testing.T) {
	n := needNode(t)
	pod := currentPod(t, n)
	before := condition(t, n, "KernelDeadlock")
	if before.Status != corev1.ConditionTrue {
		writeHungTask(t, n, 4700+os.Getpid()%200)
		before = condition(t, n, "KernelDeadlock")
	}
	restarts := pod.Status.ContainerStatuses[0].RestartCount
	pid := agentPID(t, n, pod)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGSTOP sent to the agent, pid %d", pid)
	start := time.Now()
	stop := watchCondition(t, n, "KernelDeadlock", before)
	// A restarted agent must not judge the kubelet's Lease before it has
	// seen it.
	stopLease := watchCondition(t, n, "KubeletLeaseStale", condition(t, n, "KubeletLeaseStale"))
	waitFor(t, 4*time.Minute, "the kubelet restarting the stopped container", func() (bool, string) {
		p, err := n.Client.CoreV1().Pods(namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount > restarts && cs.Ready, fmt.Sprintf("restarts %d, ready %v", cs.RestartCount, cs.Ready)
	})
	t.Logf("restarted and Ready %.0f s after SIGSTOP", time.Since(start).Seconds())
	// Long enough for the new agent to have started, adopted and written.
	time.Sleep(15 * time.Second)
	stop()
	stopLease()
	ev := events(t, n, pod.Name, "Unhealthy")
	if len(ev) == 0 {
		t.Errorf("no Unhealthy (liveness) event on pod %s", pod.Name)
	}
}

// watchCondition records every status of typ while it runs, and fails the
// test when it was ever other than want's status, or its transition time
// moved.
func watchCondition(t *testing.T, n *testnode.Node, typ string, want corev1.NodeCondition) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	finished := make(chan []string)
	go func() {
		var seen []string
		for {
			select {
			case <-done:
				finished <- seen
				return
			case <-time.After(250 * time.Millisecond):
			}
			node, err := n.Client.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
			if err != nil {
				continue
			}
			for _, c := range node.Status.Conditions {
				if string(c.Type) == typ && (c.Status != want.Status || !c.LastTransitionTime.Equal(&want.LastTransitionTime)) {
					seen = append(seen, fmt.Sprintf("%s %s since %s", c.Status, c.Reason, c.LastTransitionTime))
				}
			}
		}
	}()
	return func() {
		close(done)
		if seen := <-finished; len(seen) > 0 {
			t.Errorf("%s flapped: was %s since %s, then %v", typ, want.Status, want.LastTransitionTime, seen[:min(len(seen), 5)])
		}
	}
}

// TestRolloutRestart replaces the pod; True stays True, and the kernel
// record already reported is not reported again.
func TestRolloutRestart(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	old := currentPod(t, n)
	before := condition(t, n, "KernelDeadlock")
	if before.Status != corev1.ConditionTrue {
		t.Fatalf("KernelDeadlock is %s, want True from the earlier tests", before.Status)
	}
	count := eventCount(nodeEvents(t, n, "TaskHung"))
	stop := watchCondition(t, n, "KernelDeadlock", before)
	stopLease := watchCondition(t, n, "KubeletLeaseStale", condition(t, n, "KubeletLeaseStale"))
	if out, err := n.Kubectl(ctx, "-n", namespace, "rollout", "restart", "daemonset/"+dsName); err != nil {
		t.Fatalf("rollout restart: %v\n%s", err, out)
	}
	pod := waitDaemonSetReady(t, n, old.Name)
	t.Logf("pod %s replaced %s", pod.Name, old.Name)
	waitLog(t, n, pod, `"reading the kernel log"`)
	time.Sleep(15 * time.Second)
	stop()
	stopLease()
	if after := eventCount(nodeEvents(t, n, "TaskHung")); after != count {
		t.Errorf("TaskHung events went from %d to %d across the rollout: a record was reported twice", count, after)
	}
}

// TestAdmissionPolicyWithKubeletToken uses the pod's own projected token,
// issued through the real kubelet, read from the kubelet's mount of it: it
// may patch its Node's status, and is refused on another Node.
func TestAdmissionPolicyWithKubeletToken(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	pod := currentPod(t, n)
	paths, _ := filepath.Glob(n.NodePath(fmt.Sprintf("/var/lib/kubelet/pods/%s/volumes/kubernetes.io~projected/*/token", pod.UID)))
	if len(paths) != 1 {
		t.Fatalf("want one projected token of pod %s, found %v", pod.Name, paths)
	}
	token, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: n.Cluster.URL(), BearerToken: string(token), TLSClientConfig: rest.TLSClientConfig{CAFile: n.Cluster.CAFile()}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name + "-other"}}
	if _, err := n.Client.CoreV1().Nodes().Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Client.CoreV1().Nodes().Delete(context.Background(), other.Name, metav1.DeleteOptions{}) })
	own := condition(t, n, "KernelDeadlock")
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{own}}})
	if _, err := client.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("the pod's token may not patch its own Node's status: %v", err)
	}
	_, err = client.CoreV1().Nodes().Patch(ctx, other.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err == nil || !strings.Contains(err.Error(), "nodeguard may write only the Node its pod runs on") {
		t.Errorf("patching another Node's status with the pod's token: got %v, want the admission policy's refusal", err)
	}
}

// TestMemoryUnderFlood reads the pod's real cgroup from the host after it
// has idled, then after a 100k-line kernel log flood.
func TestMemoryUnderFlood(t *testing.T) {
	n := needNode(t)
	if !n.Journald {
		t.Skip("no systemd-journald runs for the node, and /dev/kmsg takes at most one record per 50 ms here")
	}
	pod := currentPod(t, n)
	limit := pod.Spec.Containers[0].Resources.Limits.Memory().Value()
	cg := podMemoryCgroup(t, n, pod)
	idle := readInt(t, filepath.Join(cg, "memory.usage_in_bytes"))
	// The peak from here on.
	os.WriteFile(filepath.Join(cg, "memory.max_usage_in_bytes"), []byte("0"), 0)
	m0 := metric(get(t, metricsURL+"/metrics"), `nodeguard_events_total{reason="OOMKilling"}`)
	lines, problems := writeKernelFlood(t, n, 100000)
	waitFor(t, 5*time.Minute, "the flood's OOM kills counted", func() (bool, string) {
		got := metric(get(t, metricsURL+"/metrics"), `nodeguard_events_total{reason="OOMKilling"}`) - m0
		return got >= float64(problems), fmt.Sprintf("%.0f of %d", got, problems)
	})
	peak := readInt(t, filepath.Join(cg, "memory.max_usage_in_bytes"))
	after := readInt(t, filepath.Join(cg, "memory.usage_in_bytes"))
	// usage_in_bytes counts the page cache charged to the pod too: the
	// journal file's pages the agent reads in. memory.stat splits the two.
	stat := memoryStat(t, filepath.Join(cg, "memory.stat"))
	t.Logf("pod cgroup memory: idle %.1f MiB, peak during a %d-line flood %.1f MiB, after %.1f MiB (rss %.1f MiB, page cache %.1f MiB); limit %.0f MiB",
		mib(idle), lines, mib(peak), mib(after), mib(stat["total_rss"]), mib(stat["total_cache"]), mib(limit))
	if peak > limit*3/4 {
		t.Errorf("the flood took the pod to %.1f MiB, over three quarters of its %.0f MiB limit", mib(peak), mib(limit))
	}
}

// --- helpers ---

// kustomizeOverlay writes deploy/ with only the image reference changed.
func kustomizeOverlay(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "nodeguard-e2e-overlay-"+strconv.Itoa(os.Getpid()))
	if err := testnode.WriteOverlay(dir, repo, imageRef); err != nil {
		t.Fatal(err)
	}
	return dir
}

func execOut(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

func waitDaemonSetReady(t *testing.T, n *testnode.Node, notPod string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	var pod *corev1.Pod
	waitFor(t, 4*time.Minute, "the DaemonSet Ready", func() (bool, string) {
		ds, err := n.Client.AppsV1().DaemonSets(namespace).Get(ctx, dsName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pods, err := n.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for i := range pods.Items {
			p := &pods.Items[i]
			ready := false
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			states = append(states, fmt.Sprintf("%s %s ready=%v %s", p.Name, p.Status.Phase, ready, containerState(p)))
			// The admission test's second Node gets a pod too, which never runs.
			if ready && p.Name != notPod && p.DeletionTimestamp == nil && p.Spec.NodeName == n.Name {
				pod = p
			}
		}
		return pod != nil && ds.Status.NumberReady >= 1,
			fmt.Sprintf("ds ready %d updated %d; pods %v", ds.Status.NumberReady, ds.Status.UpdatedNumberScheduled, states)
	})
	return pod
}

func containerState(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			return "waiting " + cs.State.Waiting.Reason + " " + cs.State.Waiting.Message
		case cs.State.Terminated != nil:
			return "terminated " + cs.State.Terminated.Reason
		}
	}
	return ""
}

func currentPod(t *testing.T, n *testnode.Node) *corev1.Pod {
	t.Helper()
	return waitDaemonSetReady(t, n, "")
}

// agentPID is the host PID of the agent in pod, from its container's cgroup.
func agentPID(t *testing.T, n *testnode.Node, pod *corev1.Pod) int {
	t.Helper()
	id := strings.TrimPrefix(pod.Status.ContainerStatuses[0].ContainerID, "containerd://")
	paths, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/pids", n.CgroupRoot, "kubepods", "*", "pod"+string(pod.UID), id, "cgroup.procs"))
	if len(paths) == 0 {
		paths, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup/pids", n.CgroupRoot, "kubepods", "pod"+string(pod.UID), id, "cgroup.procs"))
	}
	if len(paths) != 1 {
		t.Fatalf("no cgroup for container %s of pod %s under %s", id, pod.Name, n.CgroupRoot)
	}
	b, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(cmd)) == "nodeguard" {
			return pid
		}
	}
	t.Fatalf("no nodeguard process in %s: %s", paths[0], b)
	return 0
}

func podMemoryCgroup(t *testing.T, n *testnode.Node, pod *corev1.Pod) string {
	t.Helper()
	cg, err := n.PodCgroup("memory", string(pod.UID))
	if err != nil {
		t.Skipf("pod %s: %v", pod.Name, err)
	}
	return cg
}

func waitLog(t *testing.T, n *testnode.Node, pod *corev1.Pod, pattern string) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	waitFor(t, 2*time.Minute, "the pod logging "+pattern, func() (bool, string) {
		b, err := n.PodLogs(namespace, pod.Name, string(pod.UID), "nodeguard")
		if err != nil {
			return false, err.Error()
		}
		return re.MatchString(b), tail(b)
	})
}

func waitNoLog(t *testing.T, n *testnode.Node, pod *corev1.Pod, pattern string) {
	t.Helper()
	b, err := n.PodLogs(namespace, pod.Name, string(pod.UID), "nodeguard")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(pattern).FindString(b); m != "" {
		t.Errorf("the pod logged %s", m)
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

func waitFor(t *testing.T, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := f()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", timeout, what, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// metric is the value of the series named exactly so, or -1.
func metric(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(l, series)), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// ownedConditions are the condition types the agent in the pod says it
// owns: its nodeguard_condition series.
func ownedConditions(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`nodeguard_condition\{condition="([^"]+)"`)
	must := []string{"KernelDeadlock", "ContainerRuntimeUnresponsive", "DiskIOStuck", "KubeletLeaseStale", "NodeguardCheckStuck"}
	var out []string
	// The condition series appear once the agent has read the Node, which
	// its checks do not wait for: a pod may be Ready, and reading its
	// kernel log, a moment before.
	waitFor(t, 30*time.Second, "the agent's condition metrics", func() (bool, string) {
		seen := map[string]bool{}
		for _, m := range re.FindAllStringSubmatch(get(t, metricsURL+"/metrics"), -1) {
			seen[m[1]] = true
		}
		out = out[:0]
		for k := range seen {
			out = append(out, k)
		}
		sort.Strings(out)
		for _, m := range must {
			if !seen[m] {
				return false, fmt.Sprintf("it owns %v, not %s", out, m)
			}
		}
		return true, ""
	})
	return out
}

func condition(t *testing.T, n *testnode.Node, typ string) corev1.NodeCondition {
	t.Helper()
	node, err := n.Client.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := nodeCondition(node, typ); c != nil {
		return *c
	}
	return corev1.NodeCondition{Type: corev1.NodeConditionType(typ)}
}

func nodeEvents(t *testing.T, n *testnode.Node, reason string) []corev1.Event {
	t.Helper()
	return events(t, n, n.Name, reason)
}

func events(t *testing.T, n *testnode.Node, object, reason string) []corev1.Event {
	t.Helper()
	list, err := n.Client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + object + ",reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func eventCount(evs []corev1.Event) int32 {
	var c int32
	for _, e := range evs {
		c += max(e.Count, 1)
	}
	return c
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func mib(v int64) float64 { return float64(v) / (1 << 20) }

// memoryStat reads a cgroup v1 memory.stat file.
func memoryStat(t *testing.T, path string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out
}

// probeSandboxes lists, through the node's runtime, the sandboxes that
// carry the cri check's probe label.
func probeSandboxes(t *testing.T, n *testnode.Node) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := criclient.NewRemoteRuntimeServiceBuilder().WithEndpoint("unix://" + n.ContainerdSocket).
		WithConnectionTimeout(10 * time.Second).WithTracerProvider(trace.TracerProvider(nil)).Build(ctx)
	if err != nil {
		t.Fatalf("connecting to the node's containerd: %v", err)
	}
	defer rs.Close(context.Background())
	sandboxes, err := rs.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"nodeguard.io/probe": "sandbox"}})
	if err != nil {
		t.Fatalf("listing the node's sandboxes: %v", err)
	}
	var out []string
	for _, sb := range sandboxes {
		out = append(out, sb.GetMetadata().GetNamespace()+"/"+sb.GetMetadata().GetName()+" "+sb.GetState().String())
	}
	return out
}
