package logsource

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// systemJournalDirs are where sd_journal_open looks for the local journal:
// journald's volatile and persistent stores, each with a directory per
// machine ID inside. The readability check and the follower's watch both
// look there.
var systemJournalDirs = []string{"/run/log/journal", "/var/log/journal"}

// systemJournalReadable fails when the journal has files under dirs and
// this process can open none of them. sd_journal_open skips what it cannot
// read, so an agent that lost the right to read the journal (a mount's
// mode, a dropped capability, an SELinux label) would otherwise follow an
// empty journal in silence, and look like a quiet, healthy node. No
// journal files at all is not an error: journald may not have written
// them yet, and sd_journal picks them up when it does.
func systemJournalReadable(dirs []string) error {
	var firstErr error
	for _, dir := range dirs {
		ok, err := anyReadableJournal(dir, 1)
		if ok {
			return nil
		}
		firstErr = cmp.Or(firstErr, err)
	}
	if firstErr != nil {
		return fmt.Errorf("no journal file under %s can be read: %w", strings.Join(dirs, " or "), firstErr)
	}
	return nil
}

// anyReadableJournal looks for a journal file it can open in dir and, depth
// levels down, in its subdirectories (the machine ID's).
func anyReadableJournal(dir string, depth int) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var firstErr error
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir() && depth > 0:
			ok, err := anyReadableJournal(p, depth-1)
			if ok {
				return true, nil
			}
			firstErr = cmp.Or(firstErr, err)
		case strings.HasSuffix(e.Name(), ".journal"):
			f, err := os.Open(p)
			if err == nil {
				f.Close()
				return true, nil
			}
			firstErr = cmp.Or(firstErr, err)
		}
	}
	return false, firstErr
}
