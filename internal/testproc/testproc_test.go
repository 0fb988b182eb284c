package testproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartLogsAndStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		signal syscall.Signal // sent before Stop
	}{
		{"ends on SIGTERM", "echo started; exec sleep 60", 0},
		{"stopped with SIGSTOP first", "echo started; exec sleep 60", syscall.SIGSTOP},
		{"ignores SIGTERM", "trap '' TERM; echo started; while :; do sleep 0.1; done", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "p.log")
			p, err := Start(exec.Command("sh", "-c", tc.script), log)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Stop(time.Second) })
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if b, _ := os.ReadFile(log); strings.Contains(string(b), "started") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no output in the log within 10 s")
				}
			}
			if tc.signal != 0 {
				p.Cmd.Process.Signal(tc.signal)
			}
			if !p.Running() {
				t.Fatal("Running is false before Stop")
			}
			p.Stop(time.Second)
			if p.Running() {
				t.Error("Running is true after Stop")
			}
		})
	}
}
