//go:build journald

package logsource

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/sdjournal"
)

// JournalAvailable says whether this binary can read the journal: reading it
// takes libsystemd through cgo, built in with the journald tag.
const JournalAvailable = true

// Run follows the journal and emits each entry of the units asked for, until
// ctx ends. After, a cursor from an earlier entry, resumes after that entry,
// and wins over FromStart.
func (f *JournalFollower) Run(ctx context.Context, after string, emit func(Line)) error {
	var (
		j   *sdjournal.Journal
		err error
	)
	if f.Dir != "" {
		j, err = sdjournal.NewJournalFromDir(f.Dir)
	} else if err = systemJournalReadable(systemJournalDirs); err != nil {
		return fmt.Errorf("opening the journal %s: %w", f.describe(), err)
	} else {
		j, err = sdjournal.NewJournal()
	}
	if err != nil {
		return fmt.Errorf("opening the journal %s: %w", f.describe(), err)
	}
	defer j.Close()
	matches := append([]string{}, f.Matches...)
	for _, unit := range f.Units {
		matches = append(matches, sdjournal.SD_JOURNAL_FIELD_SYSTEMD_UNIT+"="+unit)
	}
	for i, m := range matches {
		if i > 0 {
			if err := j.AddDisjunction(); err != nil {
				return fmt.Errorf("matching journal entries: %w", err)
			}
		}
		if err := j.AddMatch(m); err != nil {
			return fmt.Errorf("matching journal entries %s: %w", m, err)
		}
	}
	if after != "" {
		// Resume: step onto the entry last handled, so that Next gives
		// the one after it. When the journal no longer holds that entry
		// (rotated away), Next lands on the first one after where it was:
		// step back so that it is read.
		if err = j.SeekCursor(after); err == nil {
			if _, err = j.Next(); err == nil && j.TestCursor(after) != nil {
				_, err = j.Previous()
			}
		}
		if err != nil {
			// A cursor the journal cannot take (a damaged state file)
			// would fail every restart the same way: start as without one.
			if f.BadCursor != nil {
				f.BadCursor(after, err)
			}
			after, err = "", nil
		}
	}
	switch {
	case after != "":
	case f.FromStart:
		err = j.SeekHead()
	default:
		// The tail is the last entry; step onto it so that Next gives the
		// first new one.
		if err = j.SeekTail(); err == nil {
			_, err = j.Previous()
		}
	}
	if err != nil {
		return fmt.Errorf("seeking in the journal %s: %w", f.describe(), err)
	}
	dirs := systemJournalDirs
	if f.Dir != "" {
		dirs = []string{f.Dir}
	}
	changes, err := watchJournal(dirs)
	if err == nil {
		defer changes.Close()
		// libsystemd watches for new and removed files from its first wait
		// on; that one returns at once.
		if r := j.Wait(0); r < 0 {
			return fmt.Errorf("waiting on the journal %s: %w", f.describe(), errors.New(strconv.Itoa(r)))
		}
	} else if f.Unwatched != nil {
		f.Unwatched(err)
	}
	if f.Positioned != nil {
		f.Positioned()
	}
	wait := f.Poll
	switch {
	case wait > 0:
	case changes != nil:
		wait = time.Minute
	default:
		wait = time.Second
	}
	var poll *time.Timer
	if changes != nil {
		poll = time.NewTimer(wait)
		defer poll.Stop()
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		n, err := j.Next()
		if err != nil {
			return fmt.Errorf("reading the journal %s: %w", f.describe(), err)
		}
		if n == 0 && changes == nil {
			// Wait returns on new entries or after the timeout, so ctx is
			// looked at at least every wait.
			if r := j.Wait(wait); r < 0 {
				return fmt.Errorf("waiting on the journal %s: %w", f.describe(), errors.New(strconv.Itoa(r)))
			}
			continue
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-changes.C:
			case <-poll.C:
			}
			poll.Reset(wait)
			// libsystemd takes in what changed (a file added at a
			// rotation, one removed), without waiting.
			if r := j.Wait(0); r < 0 {
				return fmt.Errorf("waiting on the journal %s: %w", f.describe(), errors.New(strconv.Itoa(r)))
			}
			continue
		}
		e, err := j.GetEntry()
		if err != nil {
			return fmt.Errorf("reading a journal entry %s: %w", f.describe(), err)
		}
		unit := e.Fields[sdjournal.SD_JOURNAL_FIELD_SYSTEMD_UNIT]
		emit(Line{
			Text:   e.Fields[sdjournal.SD_JOURNAL_FIELD_MESSAGE],
			Time:   time.UnixMicro(int64(e.RealtimeTimestamp)),
			Where:  journalWhere(unit, e.Fields[sdjournal.SD_JOURNAL_FIELD_TRANSPORT]),
			Unit:   unit,
			Cursor: e.Cursor,
		})
	}
}

// journalWhere names an entry for a finding's source: by its unit, or as
// the kernel's when it came from the kernel's log.
func journalWhere(unit, transport string) string {
	switch {
	case transport == "kernel":
		return "journal kernel"
	case unit != "":
		return "journal " + unit
	default:
		return "journal"
	}
}
