package pstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// fixtures copies testdata into a temporary tree with the file times the
// kernel would have given them (git does not keep times).
func fixtures(t *testing.T) (sysPstore, systemdPstore string) {
	t.Helper()
	root := t.TempDir()
	err := filepath.WalkDir("testdata", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("testdata", path)
		dst := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
		at := time.Unix(1700000000, 0)
		return os.Chtimes(dst, at, at)
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "sys-pstore"), filepath.Join(root, "systemd")
}

func TestScanFindsEachCrashOnce(t *testing.T) {
	sys, sd := fixtures(t)
	crashes, err := Scan([]string{sys, sd, filepath.Join(t.TempDir(), "missing")})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Crash{}
	for _, c := range crashes {
		got[filepath.Base(c.Files[0])] = c
	}
	tests := []struct {
		file, reason, summary string
		parts                 int
	}{
		{"dmesg-ramoops-0", "KernelPanic", "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b", 1},
		{"dmesg-efi-170000000101001", "KernelOops", "BUG: kernel NULL pointer dereference, address: 0000000000000008", 1},
		// Two parts of one panic are one crash.
		{"dmesg-efi-170000000001001", "KernelPanic", "Kernel panic - not syncing: softlockup: hung tasks", 2},
	}
	if len(crashes) != len(tests) {
		t.Errorf("found %d crashes, want %d (the Restart record and console log are not crashes): %+v", len(crashes), len(tests), crashes)
	}
	for _, tt := range tests {
		c, ok := got[tt.file]
		if !ok {
			t.Errorf("no crash from %s", tt.file)
			continue
		}
		if c.Reason != tt.reason || c.Summary != tt.summary || len(c.Files) != tt.parts || c.ID == "" {
			t.Errorf("%s: %s %q in %d files (id %q), want %s %q in %d", tt.file, c.Reason, c.Summary, len(c.Files), c.ID, tt.reason, tt.summary, tt.parts)
		}
	}
}

func TestCheckReportsACrashOnceAcrossRestarts(t *testing.T) {
	sys, sd := fixtures(t)
	state := t.TempDir()
	run := func() []finding.Finding {
		c := New(&Config{Paths: []string{sys, sd}}, checks.Env{Log: zaptest.NewLogger(t), StateDir: state})
		ctx, cancel := context.WithCancel(context.Background())
		var got []finding.Finding
		done := make(chan error)
		go func() { done <- c.Run(ctx, func(f finding.Finding) { got = append(got, f) }) }()
		time.Sleep(200 * time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := run()
	if len(first) != 3 {
		t.Fatalf("first start reported %d crashes, want 3: %+v", len(first), first)
	}
	for _, f := range first {
		if err := f.Validate(); err != nil || !strings.Contains(f.Message, "before this boot") {
			t.Errorf("finding %+v: %v", f, err)
		}
	}
	// systemd-pstore moving a crash's files elsewhere does not make it new.
	moved := filepath.Join(filepath.Dir(sd), "moved")
	if err := os.Rename(sys, moved); err != nil {
		t.Fatal(err)
	}
	sys = moved
	if again := run(); len(again) != 0 {
		t.Errorf("restart reported %d crashes again: %+v", len(again), again)
	}
}

// FuzzScan: whatever a crashed kernel left in pstore, reading it never
// panics, and a crash found has a reason, a summary and an ID.
func FuzzScan(f *testing.F) {
	for _, seed := range []string{
		"Panic#1 Part1\n<0>[ 1.0] Kernel panic - not syncing: Fatal exception\n",
		"Oops#2 Part3\n<1>[ 2.0] BUG: unable to handle page fault for address: 0000000000000008\n",
		"Restart#1 Part1\n<6>[ 3.0] reboot: Restarting system\n",
		"\x00\xff garbage",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "dmesg-ramoops-0"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		crashes, err := Scan([]string{dir})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range crashes {
			if c.ID == "" || (c.Reason != "KernelPanic" && c.Reason != "KernelOops") || c.Summary == "" {
				t.Errorf("crash %+v", c)
			}
			if err := c.Finding().Validate(); err != nil {
				t.Error(err)
			}
		}
	})
}

// TestScanSkipsWhatItCannotRead: an over-long record (a line past the
// scanner's 1 MiB) is named in the error, and the crashes in the other
// records are still found.
func TestScanSkipsWhatItCannotRead(t *testing.T) {
	sys, _ := fixtures(t)
	bad := filepath.Join(sys, "dmesg-ramoops-9")
	if err := os.WriteFile(bad, []byte("Panic#9 Part1\n"+strings.Repeat("x", 2<<20)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	crashes, err := Scan([]string{sys})
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Scan error %v, want one naming %s", err, bad)
	}
	if len(crashes) == 0 {
		t.Error("no crashes found beside the unreadable record")
	}
}

func TestOopsLineIsTheKernelsNotAUserTrap(t *testing.T) {
	for line, want := range map[string]bool{
		"general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP PTI": true,
		"general protection fault: 0000 [#1] SMP":                                                            true,
		"traps: java[4242] general protection fault ip:7f00deadbeef sp:7ffd00000000 error:0 in libc.so.6":    false,
	} {
		if got := oopsLine.MatchString(line); got != want {
			t.Errorf("oopsLine matches %q: %v, want %v", line, got, want)
		}
	}
}

// TestScanGroupsPartsByTimeNotBySecond: the kernel stamps each part of a
// crash on its own, so two parts can fall either side of a second; two
// crashes with the same header (each boot's first panic is Panic#1) are far
// apart in time.
func TestScanGroupsPartsByTimeNotBySecond(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, at time.Time) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	first := time.Unix(1700000000, 900_000_000)
	write("dmesg-efi-1", "Panic#1 Part1\n<0>[ 9.0] Kernel panic - not syncing: first crash\n", first)
	write("dmesg-efi-2", "Panic#1 Part2\n<4>[ 8.0] watchdog: BUG: soft lockup\n", first.Add(300*time.Millisecond)) // the next second
	write("dmesg-efi-3", "Panic#1 Part1\n<0>[ 7.0] Kernel panic - not syncing: a later boot's crash\n", first.Add(time.Hour))
	crashes, err := Scan([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(crashes) != 2 {
		t.Fatalf("%d crashes, want 2 (one of two parts, one later): %+v", len(crashes), crashes)
	}
	if len(crashes[0].Files) != 2 || !strings.Contains(crashes[0].Summary, "first crash") {
		t.Errorf("first crash %+v, want two parts and the first panic", crashes[0])
	}
	if len(crashes[1].Files) != 1 || !strings.Contains(crashes[1].Summary, "a later boot's crash") {
		t.Errorf("second crash %+v, want the later panic alone", crashes[1])
	}
}
