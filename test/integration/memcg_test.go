package integration

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// dyingMemcgs counts zombie memory cgroups the way an SRE would by hand on
// cgroup v1: the kernel's count in /proc/cgroups less the directories.
func dyingMemcgs(t *testing.T, root string) int {
	t.Helper()
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kernel := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 4 && fields[0] == "memory" {
			kernel, _ = strconv.Atoi(fields[2])
		}
	}
	dirs := 0
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs++
		}
		return nil
	})
	return kernel - dirs
}

// TestZombieMemoryCgroupsMakeMemoryCgroupLeak makes zombie memory cgroups
// the classic way: a process writes a file inside a memory cgroup, so the
// file's page cache is charged to it, and the cgroup is then removed; the
// kernel keeps it until that page cache is freed.
func TestZombieMemoryCgroupsMakeMemoryCgroupLeak(t *testing.T) {
	needCluster(t)
	needRoot(t, "makes and removes memory cgroups")
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, "memory.usage_in_bytes")); err != nil {
		t.Skip("needs the cgroup v1 memory controller at /sys/fs/cgroup/memory, where zombies are counted against /proc/cgroups")
	}
	baseline := dyingMemcgs(t, root)
	const zombies = 20
	config := freshStart + fmt.Sprintf("  memcg:\n    period: 1s\n    zombieThreshold: %d\n", baseline+zombies/2)

	const name = "memcg-node"
	createNode(t, name)
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "MemoryCgroupLeak", corev1.ConditionFalse, 20*time.Second)

	files := t.TempDir()
	t.Cleanup(func() {
		os.RemoveAll(files)
		// Dropping the page cache lets the kernel free the zombies.
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
	})
	for i := range zombies {
		cg := filepath.Join(root, fmt.Sprintf("nodeguard-zombie-%d-%d", os.Getpid(), i))
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("echo $$ > %s/cgroup.procs && exec dd if=/dev/zero of=%s/f%d bs=1M count=2 conv=fsync status=none", cg, files, i)
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			os.Remove(cg)
			t.Fatalf("writing page cache in %s: %v\n%s", cg, err, out)
		}
		if err := os.Remove(cg); err != nil {
			t.Fatalf("removing %s: %v", cg, err)
		}
	}
	t.Logf("dying memory cgroups: %d before, %d after making %d", baseline, dyingMemcgs(t, root), zombies)
	node, took := waitCondition(t, name, "MemoryCgroupLeak", corev1.ConditionTrue, 15*time.Second)
	t.Logf("MemoryCgroupLeak True %s after the zombies were made: %s", took, condition(node, "MemoryCgroupLeak").Message)
}
