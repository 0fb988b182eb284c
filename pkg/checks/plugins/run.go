package plugins

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// outputCap bounds what is kept of a plugin's stdout and of its stderr, in
// bytes, as NPD does (4 KiB each); the rest is read and thrown away, so that
// a chatty plugin neither blocks on a full pipe nor grows the agent.
const outputCap = 4 << 10

// pipeGrace is how long Wait waits, once the plugin's process group is
// dead, for its output pipes to close. Only a process that left the group
// (setsid) can still hold them, and it is not waited for past this.
const pipeGrace = time.Second

// status is what a run says, as NPD reads an exit code: 0 OK, 1 a problem,
// anything else (2, a signal, a timeout, a plugin that cannot start)
// unknown.
type status int

const (
	statusOK status = iota
	statusProblem
	statusUnknown
)

// outcome is what one run of a plugin came to.
type outcome struct {
	status status
	// message is the plugin's stdout, trimmed and cut to the monitor's
	// max_output_length; for a timeout or a plugin that could not start,
	// what happened.
	message string
	// stderr is the start of what the plugin wrote there, for the log.
	stderr   string
	timedOut bool
	// notStarted is set when the plugin could not be started at all
	// (missing, not executable).
	notStarted error
	// stopped is set when the agent stopped during the run: the outcome
	// says nothing about the node.
	stopped bool
	took    time.Duration
}

// result names the outcome's kind for metrics and logs.
func (o outcome) result() string {
	switch {
	case o.notStarted != nil:
		return "error"
	case o.timedOut:
		return "timeout"
	case o.status == statusOK:
		return "ok"
	case o.status == statusProblem:
		return "problem"
	}
	return "unknown"
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	buf     []byte
	max     int
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	keep := min(c.max-len(c.buf), len(p))
	c.buf = append(c.buf, p[:keep]...)
	c.dropped += len(p) - keep
	return len(p), nil
}

// runPlugin runs path with args in a process group of its own, for at most
// timeout. At the deadline, or when ctx ends, the whole group is killed
// (SIGKILL to -pgid): a shell script's children die with it. When the
// plugin exits in time, whatever it left running in its group is killed
// too, so that no run outlives its deadline and runs never pile up.
func runPlugin(ctx context.Context, path string, args []string, timeout time.Duration, maxOutput int) outcome {
	start := time.Now()
	stdout, stderr := &capped{max: outputCap}, &capped{max: outputCap}
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = pipeGrace
	if err := cmd.Start(); err != nil {
		return outcome{status: statusUnknown, notStarted: err, took: time.Since(start),
			message: fmt.Sprintf("cannot start plugin %s: %v", path, err)}
	}
	pgid := cmd.Process.Pid // Setpgid: the group is named after its leader
	exited := make(chan error, 1)
	go func() { exited <- waitExited(cmd.Process.Pid) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var o outcome
	var waitErr error
	killed := false
	select {
	case waitErr = <-exited:
	case <-timer.C:
		o.timedOut, killed = true, true
	case <-ctx.Done():
		o.stopped, killed = true, true
	}
	if killed {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		// A process in uninterruptible sleep dies only when the kernel lets
		// it: until then the rule's run is still going (its next ticks are
		// skipped), but an agent that is stopping does not wait for it.
		select {
		case waitErr = <-exited:
		case <-ctx.Done():
			select {
			case waitErr = <-exited:
			case <-time.After(pipeGrace):
				go func() { <-exited; _ = cmd.Wait() }()
				return outcome{stopped: true, took: time.Since(start)}
			}
		}
	}
	// The leader has exited and is not yet reaped: its pid, which is the
	// group's id, cannot be given to another process until Wait reaps it,
	// so this reaches only what the plugin left behind.
	if waitErr == nil {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	err := cmd.Wait()
	o.took = time.Since(start)
	o.stderr = strings.TrimSpace(string(stderr.buf))
	out := cut(strings.TrimSpace(string(stdout.buf)), maxOutput)
	var exitErr *exec.ExitError
	switch {
	case o.timedOut:
		o.status = statusUnknown
		o.message = fmt.Sprintf("plugin %s timed out after %s and was killed with its process group; its output: %q", path, timeout, out)
		return o
	case err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay):
		o.status = statusUnknown
		o.message = fmt.Sprintf("waiting for plugin %s: %v", path, err)
		return o
	}
	o.message = out
	switch cmd.ProcessState.ExitCode() {
	case 0:
		o.status = statusOK
	case 1:
		o.status = statusProblem
	default: // 2 and up, or -1 for a signal
		o.status = statusUnknown
	}
	return o
}

// waitExited blocks until the process has exited, without reaping it
// (WNOWAIT), so that its group can still be killed safely.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// cut shortens s to at most n bytes, at a character boundary: NPD cuts at
// max_output_length bytes, and a cut inside a UTF-8 sequence would make a
// message the API server stores with a replacement character.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
