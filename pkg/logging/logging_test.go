package logging

import (
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
)

func TestJournalCoreSendsStructuredFields(t *testing.T) {
	type entry struct {
		msg  string
		pri  journal.Priority
		vars map[string]string
	}
	var got []entry
	send := func(msg string, pri journal.Priority, vars map[string]string) error {
		got = append(got, entry{msg, pri, vars})
		return nil
	}
	log := zap.New(NewJournalCore(zap.InfoLevel, send)).With(zap.String("node", "n1"))
	log.Debug("dropped below the level")
	log.Warn("check stopped", zap.String("check", "kmsg"), zap.Int("restarts", 3), zap.String("odd-key.x", "v"))
	if len(got) != 1 {
		t.Fatalf("sent %d entries, want 1 (debug is below the level)", len(got))
	}
	e := got[0]
	if e.msg != "check stopped" || e.pri != journal.PriWarning {
		t.Errorf("entry %q priority %d, want %q at warning", e.msg, e.pri, "check stopped")
	}
	for k, v := range map[string]string{
		"SYSLOG_IDENTIFIER": "nodeguard", "NODEGUARD_NODE": "n1", "NODEGUARD_CHECK": "kmsg",
		"NODEGUARD_RESTARTS": "3", "NODEGUARD_ODD_KEY_X": "v",
	} {
		if e.vars[k] != v {
			t.Errorf("journal field %s = %q, want %q (all: %v)", k, e.vars[k], v, e.vars)
		}
	}
}

func TestNewRejectsUnknownDestination(t *testing.T) {
	if _, err := New("syslog", "json"); err == nil {
		t.Error("New accepted log destination syslog")
	}
	if _, err := New("stderr", "console"); err != nil {
		t.Errorf("New(stderr, console): %v", err)
	}
}
