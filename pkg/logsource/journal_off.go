//go:build !journald

package logsource

import (
	"context"
	"errors"
)

// JournalAvailable says whether this binary can read the journal: reading it
// takes libsystemd through cgo, built in with the journald tag.
const JournalAvailable = false

// ErrNoJournal is what a binary built without cgo says when asked to read
// the journal.
var ErrNoJournal = errors.New("this nodeguard was built without the journald tag, so it cannot read the systemd journal; build with `-tags journald` (cgo and libsystemd's headers, Debian's libsystemd-dev), or follow a log file instead")

// Run fails: see ErrNoJournal.
func (f *JournalFollower) Run(ctx context.Context, entry func(JournalEntry)) error {
	return ErrNoJournal
}
