package logsource

import (
	"strings"
	"time"
)

// JournalFollower follows systemd journal entries of some units.
type JournalFollower struct {
	// Dir reads the journal files in a directory (a host's /var/log/journal
	// mounted elsewhere, or files made by systemd-journal-remote); empty
	// reads the local system journal.
	Dir string
	// Units are matched on _SYSTEMD_UNIT, e.g. "kubelet.service"; empty
	// takes every entry.
	Units []string
	// FromStart reads the entries already there; by default only new ones.
	FromStart bool
	// Poll bounds how long a wait for new entries lasts before ctx is
	// looked at again.
	Poll time.Duration
}

// JournalEntry is the part of a journal entry the checks use.
type JournalEntry struct {
	Unit    string
	Message string
	Time    time.Time
	Cursor  string
}

func (f *JournalFollower) describe() string {
	where := "of this system"
	if f.Dir != "" {
		where = "in " + f.Dir
	}
	if len(f.Units) > 0 {
		where += " for " + strings.Join(f.Units, ", ")
	}
	return where
}
