// Package testproc starts the servers the tests run (etcd, kube-apiserver,
// containerd, the kubelet and its control plane) and stops them, one way for
// every harness: output appended to a log file, killed with the test binary,
// and stopped by SIGCONT (a test may have stopped it), SIGTERM, then SIGKILL
// after a grace period.
package testproc

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Process is a started server. Exited is closed once it has exited; only
// Start's goroutine waits on the command.
type Process struct {
	Cmd    *exec.Cmd
	Exited chan struct{}
}

// Start starts cmd with its output appended to logPath.
func Start(cmd *exec.Cmd, logPath string) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s's log: %w", cmd.Path, err)
	}
	// A caller that sends the output elsewhere (a pipe) has set it.
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	if cmd.Stderr == nil {
		cmd.Stderr = f
	}
	// If the test binary dies, so do its servers: these machines are shared.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &Process{Cmd: cmd, Exited: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.Exited) }()
	return p, nil
}

// Running says whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.Exited:
		return false
	default:
		return true
	}
}

// Stop ends the process and waits for it: SIGCONT first, since a test may
// have stopped it, then SIGTERM, and SIGKILL once grace has passed.
func (p *Process) Stop(grace time.Duration) {
	if p == nil || !p.Running() {
		return
	}
	p.Cmd.Process.Signal(syscall.SIGCONT)
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
	case <-time.After(grace):
		p.Cmd.Process.Kill()
		<-p.Exited
	}
}
