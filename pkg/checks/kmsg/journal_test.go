//go:build journald

package kmsg

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/internal/journaltest"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// TestKernelMessagesFromTheJournal: with journal on and /dev/kmsg off, the
// kernel's messages come from real journal files (as journald stores what it
// reads from /dev/kmsg), and other programs' entries are not kernel lines.
func TestKernelMessagesFromTheJournal(t *testing.T) {
	dir := t.TempDir()
	kernel := func(at time.Time, msg string) journaltest.Entry {
		return journaltest.Entry{Time: at, Fields: map[string]string{"_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel", "MESSAGE": msg}}
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Microsecond) // the journal keeps microseconds
	// Already there at start: not read (entries after the start only).
	journaltest.Write(t, dir, "a.journal", kernel(base, "INFO: task containerd:1 blocked for more than 120 seconds."))
	off := false
	cfg := DefaultConfig()
	cfg.DevKmsg, cfg.Journal, cfg.JournalDir = &off, true, dir
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan finding.Finding, 10)
	go c.Run(ctx, func(f finding.Finding) { got <- f })
	time.Sleep(500 * time.Millisecond)
	journaltest.Write(t, dir, "b.journal",
		journaltest.Unit(base.Add(10*time.Second), "myapp.service", "Out of memory: Killed process 1 (not the kernel)"),
		kernel(base.Add(20*time.Second), "Out of memory: Killed process 4242 (memhog) total-vm:1kB, anon-rss:1kB, file-rss:0kB"),
	)
	select {
	case f := <-got:
		if f.Reason != "OOMKilling" || f.Source != "journal kernel" || !f.Time.Equal(base.Add(20*time.Second)) {
			t.Errorf("finding %+v, want OOMKilling from the journal at the entry's time", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no finding from the kernel's journal entry")
	}
	select {
	case f := <-got:
		t.Errorf("unexpected finding %+v (the entry there before the start, or another program's)", f)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestJournalSourceResumesAfterARestart: kernel entries logged while the
// agent was down are reported after the restart, those reported before are
// not reported again.
func TestJournalSourceResumesAfterARestart(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	base := time.Now().Truncate(time.Microsecond)
	kernel := func(sec int, pid int) journaltest.Entry {
		return journaltest.Entry{Time: base.Add(time.Duration(sec) * time.Second), Fields: map[string]string{
			"_TRANSPORT": "kernel", "MESSAGE": "Out of memory: Killed process " + strconv.Itoa(pid) + " (hog) total-vm:1kB, anon-rss:1kB, file-rss:0kB"}}
	}
	off := false
	cfg := DefaultConfig()
	cfg.DevKmsg, cfg.Journal, cfg.JournalDir = &off, true, dir
	start := func() (chan finding.Finding, context.CancelFunc, chan struct{}) {
		c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(t), StateDir: state}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		got, done := make(chan finding.Finding, 10), make(chan struct{})
		go func() { c.Run(ctx, func(f finding.Finding) { got <- f }); close(done) }()
		return got, cancel, done
	}
	expect := func(got chan finding.Finding, pid string) {
		t.Helper()
		select {
		case f := <-got:
			if !strings.Contains(f.Message, "process "+pid+" ") {
				t.Errorf("got %q, want the kill of %s", f.Message, pid)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no finding for %s", pid)
		}
		select {
		case f := <-got:
			t.Errorf("unexpected %q", f.Message)
		case <-time.After(500 * time.Millisecond):
		}
	}
	got, stop, done := start()
	time.Sleep(300 * time.Millisecond)
	journaltest.Write(t, dir, "a.journal", kernel(1, 101))
	expect(got, "101")
	stop()
	<-done
	journaltest.Write(t, dir, "b.journal", kernel(2, 202)) // while the agent is down
	got, stop, done = start()
	defer func() { stop(); <-done }()
	expect(got, "202")
}
