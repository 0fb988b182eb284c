package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// containerd is a real containerd the test runs, with all its state in a
// temporary directory and the native snapshotter, answering CRI on its own
// socket.
type containerd struct {
	t      *testing.T
	dir    string
	socket string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("needs containerd (Debian package containerd; make test installs it)")
	}
	// containerd's paths are limited by the unix socket path length: keep the
	// directory short.
	dir, err := os.MkdirTemp("/tmp", "ngctd")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{t: t, dir: dir, socket: filepath.Join(dir, "c.sock")}
	os.MkdirAll(filepath.Join(dir, "cni"), 0o755)
	// NetworkReady needs a CNI config to load; its plugins are never run.
	os.WriteFile(filepath.Join(dir, "cni/10-test.conflist"), []byte(`{"cniVersion":"1.0.0","name":"nodeguard-test","plugins":[{"type":"loopback"}]}`), 0o644)
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
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "%[1]s/cni"
    bin_dir = "%[1]s/cni-bin"
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		os.RemoveAll(dir)
	})
	c.start(bin)
	return c
}

func (c *containerd) start(bin string) {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	c.cmd = exec.Command(bin, "--config", filepath.Join(c.dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); log.Close(); close(done) }(c.cmd, c.exited)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(c.socket); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
			c.t.Fatalf("containerd made no socket in 20 s:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends containerd (waking it first if stopped) and removes its socket,
// as a runtime that is gone leaves the node.
func (c *containerd) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGCONT)
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	os.Remove(c.socket)
}

func TestContainerRuntimeUnresponsiveWithRealContainerd(t *testing.T) {
	needCluster(t)
	needRoot(t, "runs containerd")
	ctd := startContainerd(t)
	const name = "cri-node"
	createNode(t, name)
	config := freshStart + fmt.Sprintf("  cri:\n    endpoint: unix://%s\n    period: 1s\n    timeout: 1s\n    failureThreshold: 2\n", ctd.socket)
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address=off")...)
	node, _ := waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionFalse, 20*time.Second)
	if c := condition(node, "ContainerRuntimeUnresponsive"); c.Reason != "ContainerRuntimeIsResponsive" {
		t.Errorf("with containerd answering: %s %q", c.Reason, c.Message)
	}
	// Start from a condition the runtime set, not the healthy default.
	time.Sleep(2 * time.Second)

	// Hung: the process is there, its socket accepts, nothing answers.
	ctd.cmd.Process.Signal(syscall.SIGSTOP)
	node, took := waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionTrue, 10*time.Second)
	c := condition(node, "ContainerRuntimeUnresponsive")
	t.Logf("True %s after SIGSTOP: %s %s", took, c.Reason, c.Message)
	if c.Reason != "Timeout" {
		t.Errorf("hung containerd gave reason %s, want Timeout", c.Reason)
	}

	// Gone: the socket is removed.
	ctd.stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		node, _ = waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionTrue, 10*time.Second)
		if c = condition(node, "ContainerRuntimeUnresponsive"); c.Reason == "SocketMissing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after containerd exited: %s %q, want SocketMissing", c.Reason, c.Message)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after containerd exited: %s %s", c.Reason, c.Message)

	// Back: it clears.
	bin, _ := exec.LookPath("containerd")
	ctd.start(bin)
	_, took = waitCondition(t, name, "ContainerRuntimeUnresponsive", corev1.ConditionFalse, 10*time.Second)
	t.Logf("False %s after containerd was started again", took)
}
