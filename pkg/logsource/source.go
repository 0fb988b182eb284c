// Package logsource reads the node's logs: /dev/kmsg, the systemd journal
// (with cgo) and plain files such as kern.log, across rotation. Each is a
// Source that runs from a cursor and emits lines; a CursorStore keeps
// cursors, and like state, across agent restarts.
package logsource

import (
	"context"
	"errors"
	"time"
)

// Line is one line of a log as a source read it.
type Line struct {
	Text string
	// Time is when the line was logged; zero when the source cannot tell
	// (a plain file), for the reader to stamp.
	Time time.Time
	// Where names the line for a finding's source: "kmsg seq 42",
	// "/var/log/kern.log:7", "journal kubelet.service", "journal kernel".
	Where string
	// Unit is a journal entry's systemd unit; empty elsewhere.
	Unit string
	// Cursor says where the line is: Run given it as after resumes with the
	// line after this one. Empty where the source cannot resume (a file,
	// /dev/kmsg when the boot cannot be told).
	Cursor string
}

// Source is a log to follow.
type Source interface {
	// Run calls emit for each line after the cursor after (empty: where
	// the source is set to start) until ctx ends, and then returns nil.
	// emit is called from one goroutine, one line at a time. A cursor the
	// source cannot use (another boot's, say) is a start without one.
	Run(ctx context.Context, after string, emit func(Line)) error
}

// ErrStopped is what Follow returns for a source that stopped on its own,
// before its context ended: for a follower, an end is a failure.
var ErrStopped = errors.New("the log source stopped")

// Follow runs src from where r got to until ctx ends, handing each line to
// handle, which says whether it reported anything. r, which may be nil for
// a source whose place is not kept, is told of each line and flushed when
// src stops.
func Follow(ctx context.Context, src Source, r *Resume, handle func(Line) bool) error {
	err := src.Run(ctx, r.From(), func(l Line) { r.Done(l.Cursor, handle(l)) })
	r.Flush()
	if err == nil && ctx.Err() == nil {
		err = ErrStopped
	}
	return err
}
