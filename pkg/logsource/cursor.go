package logsource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// CursorStore keeps each source's cursor, and small state of the same kind
// (pstore's reported crashes), in a file of its own under Dir across agent
// restarts. With no Dir it keeps nothing, and every start is a first one.
type CursorStore struct {
	Dir string
}

// Load returns what was saved under name; "" when nothing was.
func (s CursorStore) Load(name string) (string, error) {
	if s.Dir == "" {
		return "", nil
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the saved cursor: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Save keeps cursor under name. It is written beside the file and renamed
// over it, so that a crash at any moment leaves the old cursor or the new
// one, never half of one.
func (s CursorStore) Save(name, cursor string) error {
	if s.Dir == "" {
		return nil
	}
	path := filepath.Join(s.Dir, name)
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("saving the cursor %s: %w", path, err)
	}
	// Not fsynced, on purpose: a save follows each reported line, and an
	// fsync on a disk that hangs would stop the kernel log's reader just
	// when the node is sick. After a power loss the file may be empty,
	// which reads as no cursor: a start as on a new boot, not a failure.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cursor), 0o644); err != nil {
		return fmt.Errorf("saving the cursor %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("saving the cursor %s: %w", path, err)
	}
	return nil
}

// Resume keeps one source's place in a store. A line that reported
// something has its cursor saved at once, so that a restart does not report
// it again; the others' are saved by Flush, which the reader calls now and
// then and Follow when the source stops, so that a restart does not read
// them again either (nor count them twice towards a rule's minCount). A nil
// Resume keeps nothing.
type Resume struct {
	store CursorStore
	name  string
	log   *zap.Logger
	from  string

	mu         sync.Mutex
	at, saved  string
	warnedSave bool
	moved      func()
}

// OnMove sets fn to be called after each line's cursor is recorded and not
// saved: for a reader that flushes on a timer only while there is
// something to flush, so that it knows to start again.
func (r *Resume) OnMove(fn func()) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.moved = fn
}

// Resume loads the cursor saved under name. One that cannot be read is
// logged and taken as none.
func (s CursorStore) Resume(name string, log *zap.Logger) *Resume {
	r := &Resume{store: s, name: name, log: log}
	from, err := s.Load(name)
	if err != nil {
		log.Warn("saved log position not read; starting without it", zap.String("cursor", name), zap.Error(err))
	}
	r.from, r.at, r.saved = from, from, from
	return r
}

// From is the cursor to start after; "" for none.
func (r *Resume) From() string {
	if r == nil {
		return ""
	}
	return r.from
}

// Done records that the line at cursor was handled; reported saves it now.
func (r *Resume) Done(cursor string, reported bool) {
	if r == nil || cursor == "" {
		return
	}
	r.mu.Lock()
	r.at = cursor
	if reported {
		r.saveLocked()
	}
	moved := r.moved
	r.mu.Unlock()
	if moved != nil && !reported {
		moved()
	}
}

// Flush saves the cursor if it moved since the last save.
func (r *Resume) Flush() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.saveLocked()
}

// Moved reports whether the cursor moved since it was last saved, so that
// a caller flushing it on a timer can stop once it has not.
func (r *Resume) Moved() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at != r.saved
}

func (r *Resume) saveLocked() {
	if r.at == r.saved {
		return
	}
	if err := r.store.Save(r.name, r.at); err != nil {
		// Once: a full or read-only disk would say so for every line.
		if !r.warnedSave {
			r.log.Warn("log position not saved; lines may be reported again after a restart", zap.String("cursor", r.name), zap.Error(err))
			r.warnedSave = true
		}
		return
	}
	r.saved = r.at
}
