package logsource

import (
	"errors"
	"strings"
	"time"
)

// ErrNoJournal is what a binary built without cgo says when asked to read
// the journal.
var ErrNoJournal = errors.New("this nodeguard was built without the journald tag, so it cannot read the systemd journal; build with `-tags journald` (cgo and libsystemd's headers, Debian's libsystemd-dev), or follow a log file instead")

// JournalFollower follows systemd journal entries of some units.
type JournalFollower struct {
	// Dir reads the journal files in a directory (a host's /var/log/journal
	// mounted elsewhere, or files made by systemd-journal-remote); empty
	// reads the local system journal.
	Dir string
	// Units are matched on _SYSTEMD_UNIT, e.g. "kubelet.service"; empty
	// takes every entry.
	Units []string
	// Matches are further FIELD=value matches, taken like Units (either may
	// match), e.g. "_TRANSPORT=kernel" for the kernel's own messages.
	Matches []string
	// FromStart reads the entries already there; by default only new ones.
	// A cursor given to Run wins over it.
	FromStart bool
	// Poll is how often the journal is looked at with no sign of a change.
	// Run learns of new entries from an inotify watch on the journal's
	// directories, and then 1 minute by default is only in case one went
	// unseen. When no watch can be had (Unwatched says why), each wait is
	// a call into libsystemd that ends on new entries or after Poll, 1 s
	// by default, and bounds how long Run takes to return once ctx ends:
	// such a wait costs the idle agent about 0.015 CPU-seconds a minute
	// (0.03 at 250 ms).
	Poll time.Duration
	// Unwatched, if set, hears why the journal's directories could not be
	// watched, and Run waits inside libsystemd instead.
	Unwatched func(err error)
	// Positioned, if set, is called once the journal is open and
	// positioned: an entry written after it returns will be read.
	Positioned func()
	// BadCursor, if set, hears of a cursor given to Run that the journal
	// could not seek to; the journal is then read as without one.
	BadCursor func(cursor string, err error)
}

func (f *JournalFollower) describe() string {
	where := "of this system"
	if f.Dir != "" {
		where = "in " + f.Dir
	}
	if what := append(append([]string{}, f.Units...), f.Matches...); len(what) > 0 {
		where += " for " + strings.Join(what, ", ")
	}
	return where
}
