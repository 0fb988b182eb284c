package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnitVerifies runs systemd-analyze verify on deploy/systemd's
// unit, with ExecStart pointed at the binary under test (verify checks that
// it exists). Any warning fails the test, not only errors.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("needs systemd-analyze")
	}
	unit, err := os.ReadFile("../../deploy/systemd/nodeguard.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "--log-to=journald") || !strings.Contains(string(unit), "--kubeconfig=") {
		t.Error("the unit does not log to journald with a kubeconfig")
	}
	path := filepath.Join(t.TempDir(), "nodeguard.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/nodeguard", needAgent(t))), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
