package disk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

const mountinfo = `22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard
30 22 259:3 / /var/lib/kubelet rw,relatime shared:2 - xfs /dev/nvme1n1 %s,attr2
31 30 0:50 / /var/lib/kubelet/pods/abc/volumes/kubernetes.io~secret/token rw,relatime - tmpfs tmpfs rw
40 22 0:60 / /var/lib/containerd %s,relatime shared:3 - ext4 /dev/nvme2n1 rw
`

func fakeProc(t *testing.T, kubeletSuper, containerdOpts string, diskstats string) string {
	t.Helper()
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "1"), 0o755)
	os.WriteFile(filepath.Join(proc, "1/mountinfo"), []byte(fmt.Sprintf(mountinfo, kubeletSuper, containerdOpts)), 0o644)
	os.WriteFile(filepath.Join(proc, "diskstats"), []byte(diskstats), 0o644)
	return proc
}

func newCheck(t *testing.T, proc string, now *time.Time) *Check {
	t.Helper()
	cfg := DefaultConfig()
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t), ProcPath: proc, SysPath: t.TempDir(), Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReadOnlyMounts(t *testing.T) {
	tests := []struct {
		name                   string
		kubeletSuper, ctrdOpts string
		want                   []string
	}{
		{"all read-write", "rw", "rw", nil},
		{"superblock read-only after errors", "ro", "rw", []string{"/var/lib/kubelet is on a read-only xfs filesystem (/dev/nvme1n1 mounted at /var/lib/kubelet)"}},
		{"mount read-only", "rw", "ro", []string{"/var/lib/containerd is on a read-only ext4 filesystem (/dev/nvme2n1 mounted at /var/lib/containerd)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			c := newCheck(t, fakeProc(t, tt.kubeletSuper, tt.ctrdOpts, ""), &now)
			got, facts, err := c.readOnlyMounts()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("read-only mounts %q, want %q", got, tt.want)
			}
			// Each read-only path's mount in full, for the evidence.
			if len(facts) != len(tt.want) {
				t.Errorf("facts %v, want one per read-only path", facts)
			}
			for k, v := range facts {
				if !strings.HasPrefix(k, "mount /var/lib/") || !strings.Contains(v, "options ") || !strings.Contains(v, "ro") {
					t.Errorf("fact %q = %q", k, v)
				}
			}
		})
	}
}

func TestMissingMountinfoIsNoData(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newCheck(t, t.TempDir(), &now)
	if _, _, err := c.readOnlyMounts(); err != checks.ErrNoData {
		t.Errorf("readOnlyMounts without mountinfo = %v, want ErrNoData", err)
	}
}

func diskstatsLine(dev string, reads, writes, inFlight int) string {
	// major minor name reads merged sectors ms writes merged sectors ms inflight io_ms weighted_ms
	return fmt.Sprintf(" 259 0 %s %d 0 0 0 %d 0 0 0 %d 0 0\n", dev, reads, writes, inFlight)
}

func TestStuckDevicesFromDiskstats(t *testing.T) {
	now := time.Unix(1000, 0)
	proc := fakeProc(t, "rw", "rw", "")
	c := newCheck(t, proc, &now)
	streaks := map[string]ioStreak{}
	step := func(stats string) string {
		t.Helper()
		os.WriteFile(filepath.Join(proc, "diskstats"), []byte(stats), 0o644)
		got, _, ok := c.stuckDevices(streaks)
		if !ok {
			t.Fatal("stuckDevices could not read diskstats")
		}
		now = now.Add(30 * time.Second)
		return got
	}
	// nvme0n1 keeps completing; nvme1n1 has 4 in flight and completes nothing.
	for i := range 4 {
		if got := step(diskstatsLine("nvme0n1", 100+i*10, 50+i, 2) + diskstatsLine("nvme1n1", 7, 3, 4)); got != "" {
			t.Fatalf("after %ds: stuck %q, want none before the 2m window", i*30, got)
		}
	}
	got := step(diskstatsLine("nvme0n1", 200, 60, 2) + diskstatsLine("nvme1n1", 7, 3, 4))
	if !strings.Contains(got, "nvme1n1 has had I/O in flight and none completed for 2m0s or more") || strings.Contains(got, "nvme0n1") {
		t.Errorf("stuck = %q, want nvme1n1 only", got)
	}
	// Still stuck 30 s later, with more waiting: the same message, so no
	// status write for it.
	if later := step(diskstatsLine("nvme0n1", 210, 61, 2) + diskstatsLine("nvme1n1", 7, 3, 9)); later != got {
		t.Errorf("stuck 30 s later = %q, want the same message as before, %q", later, got)
	}
	// However long it stays stuck, one streak is kept per device.
	for range 100 {
		step(diskstatsLine("nvme0n1", 210, 61, 2) + diskstatsLine("nvme1n1", 7, 3, 9))
	}
	if len(streaks) != 2 {
		t.Errorf("%d streaks kept for 2 devices", len(streaks))
	}
	// An unreadable diskstats is no news: the caller keeps its verdict.
	os.Remove(filepath.Join(proc, "diskstats"))
	os.Mkdir(filepath.Join(proc, "diskstats"), 0o755) // reading it fails: is a directory
	if _, _, ok := c.stuckDevices(streaks); ok {
		t.Error("stuckDevices with an unreadable diskstats says ok; want the last verdict kept")
	}
	os.Remove(filepath.Join(proc, "diskstats"))
	// One completion clears it.
	if got := step(diskstatsLine("nvme1n1", 8, 3, 4)); got != "" {
		t.Errorf("after a completion stuck = %q, want none", got)
	}
}

func TestWriteProbeAndStuckStateCombine(t *testing.T) {
	var got []finding.Finding
	now := time.Unix(1000, 0)
	st := &stuckState{emit: func(f finding.Finding) { got = append(got, f) }, now: func() time.Time { return now }}
	st.set("probe", "")
	st.set("diskstats", "")
	st.set("probe", "a write hangs")
	st.set("diskstats", "sdb stuck")
	st.set("probe", "")
	st.set("diskstats", "")
	var states []string
	for _, f := range got {
		states = append(states, string(f.Status)+":"+f.Message)
	}
	want := "False:the node's disks complete I/O|False:the node's disks complete I/O|True:a write hangs|True:a write hangs; sdb stuck|True:sdb stuck|False:the node's disks complete I/O"
	if strings.Join(states, "|") != want {
		t.Errorf("states\n%s\nwant\n%s", strings.Join(states, "|"), want)
	}

	dir := t.TempDir()
	if err := writeProbe(dir); err != nil {
		t.Errorf("write probe in a writable dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".nodeguard-probe")); !os.IsNotExist(err) {
		t.Error("write probe left its file behind")
	}
	if (&Check{cfg: &Config{ProbeDirs: []string{filepath.Join(dir, "missing")}}}).writeProbes() != "" {
		t.Error("a missing probe dir counted as a stuck disk")
	}
}

func TestRunReportsBothConditions(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newCheck(t, fakeProc(t, "ro", "rw", diskstatsLine("sda", 1, 1, 0)), &now)
	c.cfg.ProbeDirs = []string{t.TempDir()}
	c.cfg.Period = finding.Duration{Duration: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	found := make(chan finding.Finding, 100)
	done := make(chan error)
	go func() { done <- c.Run(ctx, func(f finding.Finding) { found <- f }) }()
	seen := map[string]finding.Finding{}
	deadline := time.After(5 * time.Second)
	for len(seen) < 2 {
		select {
		case f := <-found:
			seen[f.Type] = f
		case <-deadline:
			t.Fatalf("saw %v", seen)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seen[finding.ReadonlyFilesystem.Type].Status != finding.StatusTrue || seen[finding.DiskIOStuck.Type].Status != finding.StatusFalse {
		t.Errorf("ReadonlyFilesystem %s, DiskIOStuck %s; want True and False", seen[finding.ReadonlyFilesystem.Type].Status, seen[finding.DiskIOStuck.Type].Status)
	}
}

func TestHealthyIONamesTheProbedDirs(t *testing.T) {
	for _, tc := range []struct {
		dirs []string
		want string
	}{
		{nil, ""},
		{[]string{"/var/lib/kubelet"}, "writes complete in /var/lib/kubelet, and the node's disks complete I/O"},
		{[]string{"/a", "/b"}, "writes complete in /a, /b, and the node's disks complete I/O"},
	} {
		if got := healthyIO(tc.dirs); got != tc.want {
			t.Errorf("healthyIO(%q) = %q, want %q", tc.dirs, got, tc.want)
		}
	}
}

func TestContaining(t *testing.T) {
	table := []byte(`1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 8:2 / /var rw - ext4 /dev/sda2 rw
3 2 8:3 / /var/lib/kubelet rw - xfs /dev/sda3 rw
4 2 0:40 / /var/lib/kubeletx rw - tmpfs tmpfs rw
5 3 0:41 / /var/lib/kubelet/pods/uid/volumes/token rw - tmpfs tmpfs rw
6 1 8:4 / /var rw - ext4 /dev/sda4 ro`)
	for _, tc := range []struct {
		path, want string // want: the mount's ID, "" for none
	}{
		{"/var/lib/kubelet", "3"},
		{"/var/lib/kubelet/plugins", "3"},
		{"/var/lib/containerd", "6"}, // the later of two mounts on /var
		{"/home", "1"},
		{"/var/lib/kubeletx/y", "4"}, // not /var/lib/kubelet's: a prefix of the name only
	} {
		got := ""
		if line := containing(table, []string{tc.path})[0]; line != nil {
			got = string(field(line, 0))
		}
		if got != tc.want {
			t.Errorf("containing(%s) = mount %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := containing([]byte("1 0 8:1 / /var rw - ext4 /dev/sda1 rw\n"), []string{"/home"})[0]; got != nil {
		t.Errorf("a path on no listed mount: %q", got)
	}
}

// nodeMountinfo is a busy node's mount table: its disks, and a root,
// shm, and two volumes for each of pods containers.
func nodeMountinfo(pods int) string {
	var b strings.Builder
	b.WriteString(fmt.Sprintf(mountinfo, "rw", "rw"))
	for i := range pods {
		fmt.Fprintf(&b, "%d 30 0:%d / /run/containerd/io.containerd.runtime.v2.task/k8s.io/%064x/rootfs rw,relatime shared:%d - overlay overlay rw,lowerdir=/var/lib/containerd/snapshots/%d/fs,upperdir=/var/lib/containerd/snapshots/%d/fs,workdir=/var/lib/containerd/snapshots/%d/work\n", 100+4*i, 50+i, i, i, i, i, i)
		fmt.Fprintf(&b, "%d 30 0:%d / /run/containerd/io.containerd.grpc.v1.cri/sandboxes/%064x/shm rw,nosuid,nodev,noexec,relatime shared:%d - tmpfs shm rw,size=65536k\n", 101+4*i, 50+i, i, i)
		fmt.Fprintf(&b, "%d 30 0:%d / /var/lib/kubelet/pods/%08x-0000-0000-0000-000000000000/volumes/kubernetes.io~projected/kube-api-access-x rw,relatime shared:%d - tmpfs tmpfs rw,size=3932160k\n", 102+4*i, 50+i, i, i)
		fmt.Fprintf(&b, "%d 30 259:1 /var/lib/kubelet/pods/%08x/etc-hosts /run/containerd/io.containerd.runtime.v2.task/k8s.io/%064x/rootfs/etc/hosts rw,relatime - ext4 /dev/nvme0n1p1 rw,discard\n", 103+4*i, i, i)
	}
	return b.String()
}

// BenchmarkReadOnlyMounts reads a 100-pod node's mount table (403 lines)
// as the check does every period; BenchmarkReadOnlyMountsProcfs parses
// every line as procfs does, the check's way before.
func BenchmarkReadOnlyMounts(b *testing.B) {
	proc := b.TempDir()
	os.MkdirAll(filepath.Join(proc, "1"), 0o755)
	os.WriteFile(filepath.Join(proc, "1/mountinfo"), []byte(nodeMountinfo(100)), 0o644)
	c, err := New(DefaultConfig(), checks.Env{Log: zap.NewNop(), ProcPath: proc, SysPath: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("lines parsed as needed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.readOnlyMounts(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("every line parsed by procfs", func(b *testing.B) {
		fs, err := procfs.NewFS(proc)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := fs.GetProcMounts(1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
