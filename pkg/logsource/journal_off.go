//go:build !journald

package logsource

import "context"

// JournalAvailable says whether this binary can read the journal: reading it
// takes libsystemd through cgo, built in with the journald tag.
const JournalAvailable = false

// Run fails: see ErrNoJournal.
func (f *JournalFollower) Run(ctx context.Context, after string, emit func(Line)) error {
	return ErrNoJournal
}
