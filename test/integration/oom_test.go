package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/internal/imagebuild"
)

// memoryCgroupRoot finds a writable memory cgroup hierarchy: cgroup v1's
// memory controller, or the v2 unified hierarchy with memory enabled.
func memoryCgroupRoot(t *testing.T) (root string, v2 bool) {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		return "/sys/fs/cgroup/memory", false
	}
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers")); err == nil && strings.Contains(string(b), "memory") {
			return dir, true
		}
	}
	t.Skip("no memory cgroup controller to make a real OOM kill with")
	return "", false
}

func TestRealMemoryCgroupOOMKillIsOneEvent(t *testing.T) {
	needCluster(t)
	needRoot(t, "makes a memory cgroup and reads /dev/kmsg")
	root, v2 := memoryCgroupRoot(t)

	// A cgroup path shaped like the kubelet's, so the kernel's own OOM report
	// carries a pod UID and container ID for the agent to find.
	podUID := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rand.Uint32(), rand.Uint32()&0xffff, rand.Uint32()&0xffff, rand.Uint32()&0xffff, rand.Uint64()&0xffffffffffff)
	containerID := fmt.Sprintf("%016x%016x%016x%016x", rand.Uint64(), rand.Uint64(), rand.Uint64(), rand.Uint64())
	top := filepath.Join(root, fmt.Sprintf("nodeguard-test-%d", os.Getpid()))
	levels := []string{top, filepath.Join(top, "kubepods"), filepath.Join(top, "kubepods", "burstable"),
		filepath.Join(top, "kubepods", "burstable", "pod"+podUID), filepath.Join(top, "kubepods", "burstable", "pod"+podUID, containerID)}
	for _, dir := range levels {
		if v2 && dir != top {
			// Children of a v2 cgroup get the memory controller only if the
			// parent delegates it.
			os.WriteFile(filepath.Join(filepath.Dir(dir), "cgroup.subtree_control"), []byte("+memory"), 0)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("making cgroup %s: %v", dir, err)
		}
	}
	leaf := levels[len(levels)-1]
	t.Cleanup(func() {
		for i := len(levels) - 1; i >= 0; i-- {
			// A cgroup whose last task just died may take a moment to free.
			for try := 0; try < 50; try++ {
				if err := os.Remove(levels[i]); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	limitFile, limit := "memory.limit_in_bytes", "33554432"
	if v2 {
		limitFile = "memory.max"
		os.WriteFile(filepath.Join(leaf, "memory.swap.max"), []byte("0"), 0)
	}
	if err := os.WriteFile(filepath.Join(leaf, limitFile), []byte(limit), 0); err != nil {
		t.Fatalf("setting the memory limit: %v", err)
	}

	hogDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(hogDir, "testpod"), "github.com/nodeguard/nodeguard/hack/testpod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building hack/testpod: %v\n%s", err, out)
	}

	const name = "oom-node"
	createNode(t, name)
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, "/dev/kmsg")

	// It waits for a line on stdin, once in the cgroup.
	hog := exec.Command(filepath.Join(hogDir, "testpod"), "memhog")
	stdin, err := hog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
	pid := hog.Process.Pid
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("moving memhog into the cgroup: %v", err)
	}
	io.WriteString(stdin, "go\n")
	err = hog.Wait()
	t.Logf("memhog (pid %d) ended: %v", pid, err)

	marker := fmt.Sprintf("Killed process %d (testpod)", pid)
	ev, took := waitEvent(t, name, "OOMKilling", marker, 15*time.Second)
	t.Logf("OOMKilling event %s after memhog died: %s", took, ev.Message)
	for _, want := range []string{podUID, containerID} {
		if !strings.Contains(ev.Message, want) {
			t.Errorf("OOMKilling message lacks %s: %s", want, ev.Message)
		}
	}
	// Exactly one event for the one kill: wait for stragglers, then count.
	time.Sleep(2 * time.Second)
	sel := fields.AndSelectors(fields.OneTermEqualSelector("involvedObject.name", name), fields.OneTermEqualSelector("reason", "OOMKilling")).String()
	list, err := cluster.Client.CoreV1().Events(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, e := range list.Items {
		if strings.Contains(e.Message, fmt.Sprintf("process %d ", pid)) {
			count += int(e.Count)
		}
	}
	if count != 1 {
		t.Errorf("%d OOMKilling events for pid %d, want exactly 1: %+v", count, pid, list.Items)
	}
}

// TestOOMEventNamesThePodFromTheContainerRuntime: a real OOM kill in a
// real container, run by containerd in a pod sandbox as the kubelet runs
// one (its cgroup laid out as the kubelet's cgroupfs driver lays it out).
// The kernel names the pod by UID and the container by ID; the event names
// the pod's namespace and name and the container's, which the agent asks
// of the runtime after the container has died. No pod exists on the API
// server, and the agent may not read pods there.
func TestOOMEventNamesThePodFromTheContainerRuntime(t *testing.T) {
	needCluster(t)
	needRoot(t, "runs containerd and a container that the OOM killer ends")
	memoryCgroupRoot(t)
	ctd, rt, _ := podRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const image = "nodeguard.test/memhog:1"
	// In the container, stdin is empty: memhog starts at once.
	spec := imagebuild.TestPod
	spec.Entrypoint = append(spec.Entrypoint, "memhog")
	if err := ctd.ImportProgram(ctx, spec, "./hack/testpod", image); err != nil {
		t.Fatal(err)
	}
	uid := randomUID()
	pod := runCRIPod(t, rt, "ns1", "memhog", uid)
	hog := pod.createContainer(t, rt, "hog", image, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20})

	const name = "oom-pod-node"
	createNode(t, name)
	config := freshStart + fmt.Sprintf("  cri:\n    endpoint: unix://%s\n", ctd.Socket)
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, "/dev/kmsg")

	if err := rt.StartContainer(ctx, hog); err != nil {
		t.Fatalf("starting container hog: %v", err)
	}
	ev, took := waitEvent(t, name, "OOMKilling", "container ID "+hog, 20*time.Second)
	t.Logf("OOMKilling event %s after the container started: %s", took, ev.Message)
	for _, want := range []string{"(testpod)", "pod UID " + uid, "; pod ns1/memhog, container hog"} {
		if !strings.Contains(ev.Message, want) {
			t.Errorf("OOMKilling message lacks %q: %s", want, ev.Message)
		}
	}
	// The kill was the container's, as the runtime says too.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, err := rt.ContainerStatus(ctx, hog, false)
		if err != nil {
			t.Fatal(err)
		}
		s := st.GetStatus()
		if s.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			if s.GetReason() != "OOMKilled" {
				t.Errorf("container hog exited with reason %q, want OOMKilled", s.GetReason())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container hog is %s (%s) 10 s after the OOM kill, want exited", s.GetState(), s.GetReason())
		}
	}
}
