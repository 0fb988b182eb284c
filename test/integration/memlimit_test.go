package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentTakesItsGoMemoryLimitFromItsCgroup: started in a memory cgroup
// limited to 96 MiB, as a DaemonSet's container is, the agent asks the Go
// runtime to stay under 80% of it, which its /metrics shows.
func TestAgentTakesItsGoMemoryLimitFromItsCgroup(t *testing.T) {
	needRoot(t, "makes a memory cgroup")
	root, v2 := memoryCgroupRoot(t)
	dir := filepath.Join(root, fmt.Sprintf("nodeguard-memlimit-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("making cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() {
		// Runs after startAgent's cleanup (registered later, run first) has
		// killed the agent; its cgroup may take a moment to empty.
		for try := 0; try < 50; try++ {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("could not remove cgroup %s", dir)
	})
	limit := int64(96 << 20)
	limitFile := "memory.limit_in_bytes"
	if v2 {
		limitFile = "memory.max"
	}
	if _, err := os.Stat(filepath.Join(dir, limitFile)); err != nil {
		t.Skipf("the new cgroup has no %s: the memory controller is not delegated to it (%v)", limitFile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(fmt.Sprint(limit)), 0); err != nil {
		t.Fatalf("setting the memory limit: %v", err)
	}

	addr := freeAddr(t)
	// The shell joins the cgroup, then becomes the agent, so that the agent
	// is in it from its first instruction, as in a container.
	script := fmt.Sprintf(`unset GOMEMLIMIT; echo $$ > %s/cgroup.procs && exec "$@"`, dir)
	args := append([]string{"-c", script, "sh", needAgent(t)}, agentArgs(t, t.TempDir(), freshStart, "--standalone", "--listen-address="+addr)...)
	cmd, _, stderr := startProcess(t, "/bin/sh", args...)
	// The metric is in Prometheus's float format: 80530636 is 8.0530636e+07.
	want := fmt.Sprintf("go_gc_gomemlimit_bytes %g", float64(int64(float64(limit)*0.8)))
	deadline := time.Now().Add(20 * time.Second)
	for {
		metrics, err := tryHTTPGet("http://" + addr + "/metrics")
		if err == nil && strings.Contains(metrics, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's /metrics lacks %q after 20 s (last error %v); stderr:\n%s", want, err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(procs), fmt.Sprint(cmd.Process.Pid)) {
		t.Errorf("the agent (pid %d) is not in %s: %q", cmd.Process.Pid, dir, procs)
	}
	if !strings.Contains(stderr.String(), `"msg":"Go memory limit set from the cgroup's"`) {
		t.Errorf("the agent did not log the limit it took; stderr:\n%s", stderr.String())
	}
}
