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
)

// memhogSource waits for a line on stdin, then touches memory until the OOM
// killer ends it. Waiting lets the test move it into the cgroup first.
const memhogSource = `package main

import (
	"bufio"
	"os"
)

func main() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = 1
		}
		keep = append(keep, b)
	}
}
`

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
	if err := os.WriteFile(filepath.Join(hogDir, "main.go"), []byte(memhogSource), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(hogDir, "memhog"), filepath.Join(hogDir, "main.go"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building memhog: %v\n%s", err, out)
	}

	const name = "oom-node"
	createNode(t, name)
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, "/dev/kmsg")

	hog := exec.Command(filepath.Join(hogDir, "memhog"))
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

	marker := fmt.Sprintf("Killed process %d (memhog)", pid)
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

// TestOOMEventNamesThePodKnownToTheAPIServer: the kernel names a pod by UID;
// the event names it by namespace/name too.
func TestOOMEventNamesThePodKnownToTheAPIServer(t *testing.T) {
	needCluster(t)
	needRoot(t, "writes records to /dev/kmsg")
	const name = "oom-pod-node"
	createNode(t, name)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "java-app-7d9f", Namespace: metav1.NamespaceDefault},
		Spec:       corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}
	pod, err := cluster.Client.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cluster.Client.CoreV1().Pods(metav1.NamespaceDefault).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	_, _, stderr := startAgent(t, agentArgs(t, t.TempDir(), freshStart, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, "/dev/kmsg")

	pid := 100000 + rand.IntN(800000)
	memcg := fmt.Sprintf("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/cri-containerd-%064x.scope",
		strings.ReplaceAll(string(pod.UID), "-", "_"), rand.Uint64())
	writeKmsg(t, fmt.Sprintf("<6>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=%s,task_memcg=%s,task=java,pid=%d,uid=1000\n", memcg, memcg, pid))
	writeKmsg(t, fmt.Sprintf("<3>Memory cgroup out of memory: Killed process %d (java) total-vm:4000kB, anon-rss:3000kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:100kB oom_score_adj:999\n", pid))
	ev, _ := waitEvent(t, name, "OOMKilling", fmt.Sprintf("Killed process %d (java)", pid), 15*time.Second)
	for _, want := range []string{"pod UID " + string(pod.UID), "pod default/java-app-7d9f"} {
		if !strings.Contains(ev.Message, want) {
			t.Errorf("OOMKilling message lacks %q: %s", want, ev.Message)
		}
	}
}
