package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/internal/benchlog"
	"github.com/nodeguard/nodeguard/internal/journaltest"
	"github.com/nodeguard/nodeguard/internal/testnode"
)

// writeKernelFlood adds lines kernel messages to the node's journal, as
// journald stores what it reads from /dev/kmsg (_TRANSPORT=kernel, this
// boot), in one journal file that appears whole in the journal directory.
// /dev/kmsg itself takes at most one record per 50 ms on these machines, too
// slow for a flood. Every 100th line is an OOM kill with a pid of its own;
// it returns how many.
func writeKernelFlood(t *testing.T, n *testnode.Node, lines int) (int, int) {
	t.Helper()
	remote := journaltest.Remote(t)
	bootID, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	boot := strings.ReplaceAll(strings.TrimSpace(string(bootID)), "-", "")
	machineID, _ := os.ReadFile("/etc/machine-id")
	uptime, _ := os.ReadFile("/proc/uptime")
	up, _ := strconv.ParseFloat(strings.Fields(string(uptime))[0], 64)
	now := time.Now()
	mono := time.Duration(up * float64(time.Second))
	tmp := t.TempDir()
	export := filepath.Join(tmp, "flood.export")
	f, err := os.Create(export)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	problems := 0
	for i := range lines {
		msg := benchlog.Line(r, 0)
		if i%100 == 99 {
			problems++
			msg = fmt.Sprintf("Memory cgroup out of memory: Killed process %d (flood) total-vm:1204880kB, anon-rss:261644kB, file-rss:0kB, shmem-rss:0kB", 200000+i)
		}
		at := time.Duration(i) * 10 * time.Microsecond
		fmt.Fprintf(w, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n_MACHINE_ID=%s\n_TRANSPORT=kernel\nSYSLOG_IDENTIFIER=kernel\nPRIORITY=6\nMESSAGE=%s\n\n",
			now.Add(at).UnixMicro(), (mono + at).Microseconds(), boot, strings.TrimSpace(string(machineID)), msg)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := filepath.Join(tmp, "flood.journal")
	if b, err := exec.Command(remote, "-o", out, export).CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, b)
	}
	// Beside the journal journald writes (in /run: see testnode).
	dir := n.HostPath("/run/log/journal/" + strings.TrimSpace(string(machineID)))
	dst := filepath.Join(dir, "flood.journal")
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Whole, or not at all: write beside it, then rename.
	if err := os.WriteFile(dst+".tmp", b, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d kernel lines (%d OOM kills) into %s (%.1f MiB)", lines, problems, dst, float64(len(b))/(1<<20))
	return lines, problems
}
