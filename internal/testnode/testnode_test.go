package testnode

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartStop starts the node, sees it Ready, and checks that Stop
// leaves nothing of it on the host.
func TestStartStop(t *testing.T) {
	before := map[string]string{}
	for _, k := range savedSysctls {
		b, _ := os.ReadFile("/proc/sys/" + k)
		before[k] = strings.TrimSpace(string(b))
	}
	n, err := Start(context.Background(), Options{Logf: t.Logf})
	if errors.Is(err, ErrSkip) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	root, dir, bridge := n.CgroupRoot, n.Dir, n.record.Bridge
	n.Stop()
	for k, v := range before {
		b, _ := os.ReadFile("/proc/sys/" + k)
		if got := strings.TrimSpace(string(b)); got != v {
			t.Errorf("sysctl %s is %s after Stop, was %s", k, got, v)
		}
	}
	for _, h := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(h, root)); err == nil {
			t.Errorf("cgroup %s is left in %s", root, h)
		}
	}
	if _, err := os.Stat(dir); err == nil && os.Getenv("NODEGUARD_KEEP_TESTNODE") == "" {
		t.Errorf("%s is left", dir)
	}
	if _, err := os.Stat("/sys/class/net/" + bridge); err == nil {
		t.Errorf("bridge %s is left", bridge)
	}
}
