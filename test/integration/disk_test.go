package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestDiskReadOnlyAndStuckOnARealLoopFilesystem: a loop-mounted ext4 made by
// the test is remounted read-only, then frozen so that writes hang in the
// kernel, as they do on a dead disk.
func TestDiskReadOnlyAndStuckOnARealLoopFilesystem(t *testing.T) {
	needCluster(t)
	needRoot(t, "mounts a loop filesystem and freezes it")
	for _, tool := range []string{"mkfs.ext4", "fsfreeze", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	dir := t.TempDir()
	image, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", image)
	run(t, "mount", "-o", "loop", image, mnt)
	frozen := false
	t.Cleanup(func() {
		if frozen {
			exec.Command("fsfreeze", "-u", mnt).Run()
		}
		// The agent's stuck probe may still hold the filesystem for a moment.
		for try := 0; try < 50; try++ {
			if exec.Command("umount", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		exec.Command("umount", "-l", mnt).Run()
	})

	const name = "disk-node"
	createNode(t, name)
	addr := freeAddr(t)
	config := freshStart + fmt.Sprintf("  disk:\n    mounts: [%s]\n    probeDirs: [%s]\n    period: 1s\n    probeTimeout: 2s\n", mnt, mnt)
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+addr)...)
	waitCondition(t, name, "ReadonlyFilesystem", corev1.ConditionFalse, 20*time.Second)
	waitCondition(t, name, "DiskIOStuck", corev1.ConditionFalse, 10*time.Second)

	run(t, "mount", "-o", "remount,ro", mnt)
	node, took := waitCondition(t, name, "ReadonlyFilesystem", corev1.ConditionTrue, 15*time.Second)
	t.Logf("ReadonlyFilesystem True %s after the remount: %s", took, condition(node, "ReadonlyFilesystem").Message)
	if msg := condition(node, "ReadonlyFilesystem").Message; !strings.Contains(msg, mnt) {
		t.Errorf("ReadonlyFilesystem message %q does not name %s", msg, mnt)
	}
	run(t, "mount", "-o", "remount,rw", mnt)
	waitCondition(t, name, "ReadonlyFilesystem", corev1.ConditionFalse, 15*time.Second)

	run(t, "fsfreeze", "-f", mnt)
	frozen = true
	node, took = waitCondition(t, name, "DiskIOStuck", corev1.ConditionTrue, 15*time.Second) // timeout 2 s + period + write
	t.Logf("DiskIOStuck True %s after the freeze: %s", took, condition(node, "DiskIOStuck").Message)
	// The stuck probe is abandoned and reported; the agent is not hung with it.
	waitCondition(t, name, "NodeguardCheckStuck", corev1.ConditionTrue, 15*time.Second)
	if got := httpGet(t, "http://"+addr+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz while the disk hangs = %q, want ok", got)
	}
	run(t, "fsfreeze", "-u", mnt)
	frozen = false
	_, took = waitCondition(t, name, "DiskIOStuck", corev1.ConditionFalse, 15*time.Second)
	t.Logf("DiskIOStuck False %s after the thaw", took)
	waitCondition(t, name, "NodeguardCheckStuck", corev1.ConditionFalse, 15*time.Second)
}
