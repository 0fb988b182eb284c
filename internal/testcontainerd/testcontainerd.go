// Package testcontainerd runs a real containerd for tests and benchmarks,
// with all its state in a temporary directory and the native snapshotter,
// answering CRI on its own socket.
package testcontainerd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/nodeguard/nodeguard/internal/testproc"
)

// ErrNotInstalled says containerd is not on PATH.
var ErrNotInstalled = errors.New("needs containerd (Debian package containerd; make test installs it)")

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
	c := &Containerd{Dir: dir, Socket: filepath.Join(dir, "c.sock"), bin: bin}
	// NetworkReady needs a CNI config to load; its plugins are never run
	// (pods run on the host's network). A pod's processes may not get an
	// oom_score_adj below the tests' own: this machine may refuse it.
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
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "%[1]s/cni"
    bin_dir = "%[1]s/cni-bin"
`, dir)
	for name, body := range map[string]string{
		"cni/10-test.conflist": `{"cniVersion":"1.0.0","name":"nodeguard-test","plugins":[{"type":"loopback"}]}`,
		"config.toml":          config,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("writing containerd's %s: %w", name, err)
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

// Close stops containerd and removes its directory.
func (c *Containerd) Close() {
	c.Stop()
	os.RemoveAll(c.Dir)
}
