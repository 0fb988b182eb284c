package logrules

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
	"unsafe"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// maxLineBytes bounds one line of a replayed log; a longer line is cut, not
// an error, since kernel text has no such limit of its own.
const maxLineBytes = 1 << 20

// Replay runs the engine over a kernel log read from r, in any mix of the
// /dev/kmsg record, dmesg and plain forms, and calls emit for each finding.
// Time windows use the lines' own timestamps; a line without one takes the
// time of the line before it. name labels each finding's source line. A
// report still open at the end of the log ends there.
func Replay(r io.Reader, name string, e *Engine, emit func(finding.Finding)) error {
	lines := lineReader{r: r}
	var (
		now = time.Unix(0, 0).UTC()
		n   int
		buf []finding.Finding
	)
	for {
		text, ok := lines.next()
		if !ok {
			break
		}
		n++
		p := ParseKernelLine(text)
		if !p.Kernel() {
			continue
		}
		if p.HasTime {
			now = time.Unix(0, 0).UTC().Add(p.Monotonic)
		}
		// Each line names itself: a report's findings go out on a later
		// line than the one that made them, and name the one that did. A
		// clear is due at the line that shows its quiet period over.
		line := Line{Text: p.Text, Time: now, Source: name, Number: n}
		buf = e.Expire(now, buf[:0])
		for i := range buf {
			if buf[i].Source == "" {
				buf[i].Source = line.where()
			}
		}
		buf = e.Feed(line, buf)
		for _, f := range buf {
			emit(f)
		}
	}
	if lines.err != nil {
		return fmt.Errorf("reading %s after line %d: %w", name, n, lines.err)
	}
	for _, f := range e.Flush(buf[:0]) {
		emit(f)
	}
	return nil
}

// lineChunk is how much of a log one read takes at least.
const lineChunk = 64 << 10

// lineReader splits a log into lines as bufio.ScanLines does, except that a
// line longer than maxLineBytes comes out cut to that length and the rest
// of it is skipped, where ScanLines would end with bufio.ErrTooLong. Its
// lines are cut from one buffer, reused from read to read: no line is
// copied, and a benign line allocates nothing. A line is good only until
// the next; the engine copies what it keeps (see Engine.Feed).
type lineReader struct {
	r   io.Reader
	buf []byte
	// chunk is what has been read and not yet returned, in buf.
	chunk string
	// skipping is set in the rest of a line cut short.
	skipping bool
	eof      bool
	err      error
}

// next returns the next line without its "\n" or "\r\n"; false at the end
// of the log or on an error, then in err.
func (lr *lineReader) next() (string, bool) {
	for {
		if i := strings.IndexByte(lr.chunk, '\n'); i >= 0 {
			line := lr.chunk[:i]
			lr.chunk = lr.chunk[i+1:]
			if lr.skipping {
				lr.skipping = false
				continue
			}
			return strings.TrimSuffix(line, "\r"), true
		}
		if lr.skipping {
			lr.chunk = ""
		} else if len(lr.chunk) >= maxLineBytes {
			line := lr.chunk[:maxLineBytes]
			lr.chunk, lr.skipping = "", true
			return line, true
		}
		if lr.err != nil {
			return "", false
		}
		if lr.eof {
			line := lr.chunk
			lr.chunk = ""
			return line, line != ""
		}
		lr.fill()
	}
}

// fill reads, after the start of a line not yet ended, until a line ends,
// the buffer is full or the log ends.
func (lr *lineReader) fill() {
	n := len(lr.chunk)
	if want := max(lineChunk, 2*n); cap(lr.buf) < want {
		lr.buf = make([]byte, 0, want)
	}
	// The line begun moves to the front; copy handles the overlap.
	buf := lr.buf[:copy(lr.buf[:n], lr.chunk)]
	for len(buf) < cap(buf) {
		n, err := lr.r.Read(buf[len(buf):cap(buf)])
		read := buf[len(buf) : len(buf)+n]
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			lr.eof = true
			break
		}
		if err != nil {
			lr.err = err
			break
		}
		if bytes.IndexByte(read, '\n') >= 0 {
			break
		}
	}
	lr.chunk = ""
	if len(buf) > 0 {
		lr.chunk = unsafe.String(&buf[0], len(buf))
	}
}
