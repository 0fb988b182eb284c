// Package testcontainerd runs a real containerd for tests and benchmarks,
// with all its state in a temporary directory and the native snapshotter,
// answering CRI on its own socket. It can run pod sandboxes (as root, once
// ImportPause has given it its sandbox image), and a test can make runc
// refuse to create containers while everything else keeps working.
package testcontainerd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nodeguard/nodeguard/internal/imagebuild"
	"github.com/nodeguard/nodeguard/internal/testproc"
)

// ErrNotInstalled says containerd is not on PATH.
var ErrNotInstalled = errors.New("needs containerd (Debian package containerd; make test installs it)")

// PauseImage is the sandbox image containerd is told to use. Nothing can be
// pulled here: ImportPause builds and imports it.
const PauseImage = "registry.k8s.io/pause:3.10"

// runcWrapper stands in for runc (the runc runtime's BinaryName): it runs
// the real one, but while BreakRunc's flag file exists create fails, the
// way a runtime that cannot make containers does, and every other command
// (state, kill, delete) still works, so that what did start can be
// cleaned up.
const runcWrapper = `#!/bin/sh
for a in "$@"; do
	if [ "$a" = create ] && [ -e %[1]q ]; then
		echo "testcontainerd: runc create disabled by the test" >&2
		exit 1
	fi
done
exec %[2]q "$@"
`

// Containerd is one containerd process, which may be stopped and started
// again on the same socket.
type Containerd struct {
	Dir    string
	Socket string

	bin  string
	proc *testproc.Process
}

// Start runs containerd in a new directory under /tmp.
func Start() (*Containerd, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, ErrNotInstalled
	}
	// containerd's paths are limited by the unix socket path length: keep the
	// directory short.
	dir, err := os.MkdirTemp("/tmp", "ngctd")
	if err != nil {
		return nil, fmt.Errorf("making containerd's directory: %w", err)
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		os.RemoveAll(dir)
		return nil, ErrNotInstalled
	}
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "c.sock"), bin: bin}
	// NetworkReady needs a CNI config to load; its plugins are never run.
	// containerd 1.6 needs restrict_oom_score_adj here, or every sandbox
	// fails with "can't get final child's PID from pipe" (runc may not
	// lower oom_score_adj in this machine's container). runc keeps its
	// state under the directory too (Root), not in the host's /run.
	cni := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("making containerd's CNI directory: %w", err)
	}
	config := fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
[grpc]
  address = "%[1]s/c.sock"
[ttrpc]
  address = "%[1]s/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[2]q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "%[1]s/runc"
        Root = "%[1]s/runc-state"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "%[1]s/cni"
    bin_dir = "%[1]s/cni-bin"
`, dir, PauseImage)
	for _, file := range []struct {
		name, body string
		mode       os.FileMode
	}{
		{"cni/10-test.conflist", `{"cniVersion":"1.0.0","name":"nodeguard-test","plugins":[{"type":"loopback"}]}`, 0o644},
		{"config.toml", config, 0o644},
		{"runc", fmt.Sprintf(runcWrapper, c.brokenFlag(), runc), 0o755},
	} {
		if err := os.WriteFile(filepath.Join(dir, file.name), []byte(file.body), file.mode); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("writing containerd's %s: %w", file.name, err)
		}
	}
	if err := c.Start(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Start starts containerd again after Stop, and waits for its socket.
func (c *Containerd) Start() error {
	p, err := testproc.Start(exec.Command(c.bin, "--config", filepath.Join(c.Dir, "config.toml")), filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	c.proc = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(c.Socket); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
			return fmt.Errorf("containerd made no socket in 20 s:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Signal sends sig to containerd: SIGSTOP hangs it with its socket open.
func (c *Containerd) Signal(sig os.Signal) error {
	if c.proc == nil {
		return errors.New("containerd is not running")
	}
	return c.proc.Cmd.Process.Signal(sig)
}

// Stop ends containerd (waking it first if stopped) and removes its socket,
// as a runtime that is gone leaves the node.
func (c *Containerd) Stop() {
	if c.proc == nil {
		return
	}
	c.proc.Stop(10 * time.Second)
	c.proc = nil
	os.Remove(c.Socket)
}

// ImportPause builds hack/pause and imports it as PauseImage, unpacked for
// the native snapshotter the CRI plugin uses.
func (c *Containerd) ImportPause(ctx context.Context) error {
	archive, err := imagebuild.BuildPause(ctx, c.Dir, PauseImage)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.Socket, "--namespace", "k8s.io",
		"images", "import", "--snapshotter", "native", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w\n%s", archive, err, out)
	}
	return nil
}

// sandboxStarted is containerd's log line for a sandbox it started.
var sandboxStarted = regexp.MustCompile(`returns sandbox id \\?"([0-9a-f]{64})`)

// SandboxIDs lists every sandbox containerd has started so far, as its log
// says, removed ones included.
func (c *Containerd) SandboxIDs() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range sandboxStarted.FindAllSubmatch(b, -1) {
		ids = append(ids, string(m[1]))
	}
	return ids, nil
}

func (c *Containerd) brokenFlag() string { return filepath.Join(c.Dir, "runc-broken") }

// BreakRunc makes runc create fail (broken) or work again; containerd
// itself, and every CRI call that starts nothing, keep answering.
func (c *Containerd) BreakRunc(broken bool) error {
	if !broken {
		if err := os.Remove(c.brokenFlag()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(c.brokenFlag(), nil, 0o644)
}

// Close stops containerd and removes its directory, with whatever its
// sandboxes left: their shims and processes outlive containerd, their
// mounts (rootfs, /dev/shm) would keep the directory from going, and their
// cgroups (/k8s.io/ID in each hierarchy, as no cgroup parent is given
// here) would stay on the host.
func (c *Containerd) Close() {
	c.Stop()
	killShims(c.Dir)
	unmountUnder(c.Dir)
	containers, _ := os.ReadDir(filepath.Join(c.Dir, "runc-state", "k8s.io"))
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	if unified := "/sys/fs/cgroup/k8s.io"; len(hierarchies) == 0 {
		hierarchies = []string{unified}
	}
	for _, e := range containers {
		for _, h := range hierarchies {
			removeCgroup(filepath.Join(h, e.Name()))
		}
	}
	os.RemoveAll(c.Dir)
}

// removeCgroup removes an empty cgroup, waiting a little for the killed
// processes in it to be gone.
func removeCgroup(dir string) {
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) || time.Now().After(deadline) {
			return
		}
	}
}

// killShims SIGKILLs every process whose command line names dir (the
// shims, started with containerd's address) and their children (the
// sandboxes' pause processes, which would otherwise be left to init).
func killShims(dir string) {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	var shims []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(cmd), dir+"/") {
			shims = append(shims, pid)
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// The fields after the command's closing parenthesis: state, ppid.
			if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 1 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	for _, shim := range shims {
		for pid, ppid := range parent {
			if ppid == shim {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		syscall.Kill(shim, syscall.SIGKILL)
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	f.Close()
	for i := len(mounts) - 1; i >= 0; i-- {
		syscall.Unmount(mounts[i], syscall.MNT_DETACH)
	}
}
