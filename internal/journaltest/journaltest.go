// Package journaltest makes real systemd journal files for tests with
// systemd-journal-remote, which needs no journald running.
package journaltest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BootID is the boot every entry written here belongs to.
const BootID = "2776c04ceabf46b4ac3e6d56962462dd"

// bootTime anchors monotonic stamps: within one boot the journal orders
// entries by monotonic time, so it must grow with the realtime stamp across
// files.
var bootTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Remote returns systemd-journal-remote's path, or skips the test.
func Remote(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("systemd-journal-remote is not installed (Debian package systemd-journal-remote; `make test` installs it)")
	return ""
}

// Entry is one journal entry to write.
type Entry struct {
	Time   time.Time
	Fields map[string]string
}

// Unit is an entry of a systemd unit's, as journald records a service's line.
func Unit(at time.Time, unit, message string) Entry {
	return Entry{Time: at, Fields: map[string]string{
		"_SYSTEMD_UNIT":     unit,
		"SYSLOG_IDENTIFIER": strings.TrimSuffix(unit, ".service"),
		"MESSAGE":           message,
	}}
}

// Write makes the journal file dir/name holding entries.
func Write(t testing.TB, dir, name string, entries ...Entry) {
	t.Helper()
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n",
			e.Time.UnixMicro(), e.Time.Sub(bootTime).Microseconds(), BootID)
		for k, v := range e.Fields {
			if strings.Contains(v, "\n") {
				t.Fatalf("journaltest: field %s holds a newline; the export format needs binary framing for that", k)
			}
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		b.WriteString("\n")
	}
	export := filepath.Join(t.TempDir(), "export.txt")
	if err := os.WriteFile(export, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(Remote(t), "-o", filepath.Join(dir, name), export).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
}
