package logsource

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"
)

// maxLine bounds one line; a longer one is cut there rather than held whole.
const maxLine = 64 * 1024

// FileFollower follows a file as `tail -F` does: it survives the file being
// renamed away and recreated (logrotate's default), truncated in place
// (copytruncate), removed, or not existing yet.
type FileFollower struct {
	Path string
	// FromStart reads what the file holds when following starts; by default
	// only lines written after that are read.
	FromStart bool
	// Poll is how often the file is looked at once its end is reached.
	Poll time.Duration
	// Positioned, if set, is called once, when the file is first open and
	// positioned: a line written after it returns will be read. It lets a
	// caller say when it is following, which a supervisor or test writing
	// to the file needs to know.
	Positioned func()
}

// Run emits each complete line until ctx ends. Only an error reading an open
// file ends it early; a missing file is waited for. A file has no cursor:
// after is not looked at, and FromStart says where to start.
func (f *FileFollower) Run(ctx context.Context, after string, emit func(Line)) error {
	// Lines are numbered from the start of following, across rotation, for
	// a reader to find them.
	n := 0
	line := func(text string) {
		n++
		emit(Line{Text: text, Where: f.Path + ":" + strconv.Itoa(n)})
	}
	poll := f.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	fromStart, positioned := f.FromStart, f.Positioned
	for {
		err := f.follow(ctx, poll, fromStart, positioned, line)
		positioned = nil
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errRotated) {
			return err
		}
		// Whatever replaced the file is new: read it all.
		fromStart = true
	}
}

var errRotated = errors.New("file rotated")

// follow reads one incarnation of the file until it is replaced.
func (f *FileFollower) follow(ctx context.Context, poll time.Duration, fromStart bool, positioned func(), line func(string)) error {
	file, err := f.open(ctx, poll)
	if err != nil || file == nil {
		return err
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		return fmt.Errorf("following %s: %w", f.Path, err)
	}
	var offset int64
	if !fromStart {
		if offset, err = file.Seek(0, io.SeekEnd); err != nil {
			return fmt.Errorf("following %s: %w", f.Path, err)
		}
	}
	if positioned != nil {
		positioned()
	}
	r := bufio.NewReaderSize(file, maxLine)
	var partial []byte
	for {
		chunk, err := r.ReadSlice('\n')
		offset += int64(len(chunk))
		switch {
		case err == nil:
			if len(partial) > 0 {
				partial = append(partial, chunk...)
				chunk, partial = partial, partial[:0]
			}
			line(trimEOL(chunk))
			continue
		case errors.Is(err, bufio.ErrBufferFull):
			// A line longer than maxLine: hand on its first part.
			line(string(chunk))
			continue
		case errors.Is(err, io.EOF):
			// Keep a line still being written until its newline comes.
			partial = append(partial, chunk...)
		default:
			return fmt.Errorf("reading %s: %w", f.Path, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
		now, statErr := os.Stat(f.Path)
		switch {
		case statErr != nil || !os.SameFile(info, now):
			// Renamed or removed: finish the old file, then move on.
			if rest, _ := io.ReadAll(r); len(rest) > 0 {
				partial = append(partial, rest...)
			}
			for _, l := range splitLines(partial) {
				line(l)
			}
			return errRotated
		case now.Size() < offset:
			// Truncated in place: start again at the top.
			if _, err := file.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("following %s: %w", f.Path, err)
			}
			offset = 0
			partial = partial[:0]
			r.Reset(file)
		}
	}
}

// open waits for the file to exist.
func (f *FileFollower) open(ctx context.Context, poll time.Duration) (*os.File, error) {
	for {
		file, err := os.Open(f.Path)
		if err == nil {
			return file, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("opening %s: %w", f.Path, err)
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(poll):
		}
	}
}

func trimEOL(b []byte) string {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return string(b)
}

func splitLines(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		out = append(out, trimEOL(b[:i]))
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
