package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// onlyCheck returns flags that turn off every check but keep, read from the
// binary's own --help so that a new check does not break the test.
func onlyCheck(t *testing.T, keep string) []string {
	t.Helper()
	out, _ := exec.Command(needAgent(t), "--help").CombinedOutput()
	var flags []string
	for _, m := range regexp.MustCompile(`-no-check\.(\w+)`).FindAllStringSubmatch(string(out), -1) {
		if m[1] != keep {
			flags = append(flags, "--no-check."+m[1])
		}
	}
	if len(flags) == 0 {
		t.Fatalf("no -no-check flags in --help:\n%s", out)
	}
	return flags
}

// runCheckCmd runs `nodeguard check` and returns its exit code and output.
func runCheckCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(needAgent(t), append([]string{"check", "--wait=2s"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String() + errOut.String()
	}
	t.Fatal(err)
	return 0, ""
}

// TestCheckCommandExitsOneOnAReadOnlyMount: `nodeguard check` on this
// machine, with a loop filesystem made by the test flipped to read-only.
func TestCheckCommandExitsOneOnAReadOnlyMount(t *testing.T) {
	needRoot(t, "mounts a loop filesystem")
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4")
	}
	dir := t.TempDir()
	image, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", image)
	run(t, "mount", "-o", "loop", image, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	config := filepath.Join(dir, "config.yaml")
	os.WriteFile(config, []byte(fmt.Sprintf("checks:\n  disk:\n    mounts: [%s]\n    probeDirs: [%s]\n", mnt, mnt)), 0o644)
	args := append(onlyCheck(t, "disk"), "--config="+config)

	code, out := runCheckCmd(t, args...)
	if code != 0 || !strings.Contains(out, "ReadonlyFilesystem") || !strings.Contains(out, "MountsAreReadWrite") {
		t.Fatalf("healthy: exit %d, want 0:\n%s", code, out)
	}

	run(t, "mount", "-o", "remount,ro", mnt)
	code, out = runCheckCmd(t, args...)
	if code != 1 || !strings.Contains(out, "MountReadOnly") || !strings.Contains(out, mnt) {
		t.Fatalf("read-only: exit %d, want 1 and the mount named:\n%s", code, out)
	}
	t.Logf("nodeguard check with %s read-only:\n%s", mnt, out)

	// --output json holds the same.
	code, out = runCheckCmd(t, append(args, "--output=json")...)
	var result struct {
		Conditions []struct{ Condition, Status, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &result); err != nil || code != 1 {
		t.Fatalf("json: exit %d, %v:\n%s", code, err, out)
	}
	if len(result.Conditions) == 0 || result.Conditions[len(result.Conditions)-1].Status == "" {
		t.Errorf("json conditions %+v", result.Conditions)
	}
}

func TestCheckCommandExitsTwoOnBadConfig(t *testing.T) {
	code, out := runCheckCmd(t, "--config=/nonexistent/nodeguard.yaml")
	if code != 2 || !strings.Contains(out, "/nonexistent/nodeguard.yaml") {
		t.Errorf("exit %d, want 2 naming the file:\n%s", code, out)
	}
}
