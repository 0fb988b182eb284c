package reporter

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// eventRecord is one write the API server owes the Node: an event to
// create or, once created, its new count, last time and message. It is what
// one spool file holds.
type eventRecord struct {
	// V is the format's version; a file of another is not read.
	V int `json:"v"`
	// Seq orders the records, oldest first, and names the record's file.
	Seq uint64 `json:"seq"`
	// Name is the Event's, fixed when the record is made: a record sent
	// twice (the agent killed between the write and the file's removal)
	// names the same Event, which the API server then refuses to create a
	// second time.
	Name    string `json:"name"`
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Key is what repeats are aggregated by (see eventKey); empty for the
	// agent's own reports, which are not.
	Key   string    `json:"key,omitempty"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	Count int32     `json:"count"`
	// Created says an earlier write made the Event, so this one patches
	// it.
	Created bool `json:"created,omitempty"`
	// Own marks the agent's own reports (an outage, the summary of what
	// the spool had no room for): they pass the rate limit and the cap.
	Own bool `json:"own,omitempty"`
	// Suppressed counts, per reason, the events a summary record is
	// about, so that a restarted agent adds to it rather than start again.
	Suppressed map[string]int `json:"suppressed,omitempty"`
	// Since is when the first of them was turned away.
	Since time.Time `json:"since,omitzero"`
}

// spoolVersion is eventRecord's format.
const spoolVersion = 1

// valid says whether a record read back is one this agent could have
// written.
func (r *eventRecord) valid() error {
	switch {
	case r.V != spoolVersion:
		return fmt.Errorf("format version %d, not %d", r.V, spoolVersion)
	case r.Name == "" || r.Type == "" || r.Reason == "":
		return errors.New("no name, type or reason")
	case r.Count < 1:
		return fmt.Errorf("count %d", r.Count)
	case r.First.IsZero() || r.Last.Before(r.First):
		return fmt.Errorf("times %s to %s", r.First, r.Last)
	}
	return nil
}

// spoolDir keeps records in a directory, one file each, so that a write
// replaces one record whole or not at all: each is written to a temporary
// file, synced and renamed over its name. A crash loses at most the record
// whose write it cut short (its temporary file is removed on the next
// load); no other record can be torn by it.
type spoolDir struct {
	dir string
}

const (
	spoolSuffix = ".json"
	spoolTemp   = ".tmp"
)

func (s spoolDir) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016x%s", seq, spoolSuffix))
}

// write stores rec under its sequence number, replacing what was there.
func (s spoolDir) write(rec *eventRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding spool record %d: %w", rec.Seq, err)
	}
	path := s.path(rec.Seq)
	tmp := path + spoolTemp
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing spool record: %w", err)
	}
	_, err = f.Write(b)
	// Synced before the rename, so that after a power loss the name holds
	// the whole record or nothing, never an empty file. This runs on the
	// spool's own goroutine: a disk that hangs stalls it, not reporting.
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing spool record %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing spool record %s: %w", path, err)
	}
	return nil
}

// remove deletes the record under seq; one already gone is no error.
func (s spoolDir) remove(seq uint64) error {
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing spool record: %w", err)
	}
	return nil
}

// syncDir makes the renames and removals so far survive a power loss.
func (s spoolDir) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("syncing the spool directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing the spool directory %s: %w", s.dir, err)
	}
	return nil
}

// corruptFile is a spool file that could not be read back, and why.
type corruptFile struct {
	name string
	err  error
}

// load reads every record in the directory, creating it if need be. Files
// that are not whole records (truncated, garbage, another format) are
// removed and returned, so that they are counted once and never block the
// agent's start; temporary files are what a crash cut short and are
// removed silently. The records come back in sequence order.
func (s spoolDir) load() ([]*eventRecord, []corruptFile, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("making the event spool: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the event spool: %w", err)
	}
	var (
		recs    []*eventRecord
		corrupt []corruptFile
	)
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		if strings.HasSuffix(name, spoolTemp) {
			os.Remove(path)
			continue
		}
		rec, err := readRecord(path, name)
		if err != nil {
			corrupt = append(corrupt, corruptFile{name: name, err: err})
			os.RemoveAll(path)
			continue
		}
		recs = append(recs, rec)
	}
	// ReadDir sorts by name, and names are fixed-width hex sequence
	// numbers: recs are in order.
	return recs, corrupt, nil
}

func readRecord(path, name string) (*eventRecord, error) {
	hex, ok := strings.CutSuffix(name, spoolSuffix)
	if !ok || len(hex) != 16 {
		return nil, errors.New("not a spool record's name")
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return nil, fmt.Errorf("not a spool record's name: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	var rec eventRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("decoding %d bytes: %w", len(b), err)
	}
	if rec.Seq != seq {
		return nil, fmt.Errorf("holds record %d, not %d", rec.Seq, seq)
	}
	if err := rec.valid(); err != nil {
		return nil, err
	}
	return &rec, nil
}
