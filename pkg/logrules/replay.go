package logrules

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"time"

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
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLineBytes)
	sc.Split(cutLines())
	var (
		now = time.Unix(0, 0).UTC()
		n   int
		buf []finding.Finding
	)
	for sc.Scan() {
		n++
		p := ParseKernelLine(sc.Text())
		if !p.Kernel() {
			continue
		}
		if p.HasTime {
			now = time.Unix(0, 0).UTC().Add(p.Monotonic)
		}
		// Each line names itself: a report's findings go out on a later
		// line than the one that made them, and name the one that did. A
		// clear is due at the line that shows its quiet period over.
		where := name + ":" + strconv.Itoa(n)
		buf = e.Expire(now, buf[:0])
		for i := range buf {
			if buf[i].Source == "" {
				buf[i].Source = where
			}
		}
		buf = e.Feed(Line{Text: p.Text, Time: now, Source: where}, buf)
		for _, f := range buf {
			emit(f)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s after line %d: %w", name, n, err)
	}
	for _, f := range e.Flush(buf[:0]) {
		emit(f)
	}
	return nil
}

// cutLines splits lines as bufio.ScanLines does, except that a line longer
// than maxLineBytes comes out cut to that length and the rest of it is
// skipped, where ScanLines would end the scan with bufio.ErrTooLong.
func cutLines() bufio.SplitFunc {
	skipping := false
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			if skipping {
				skipping = false
				return i + 1, nil, nil
			}
			return i + 1, bytes.TrimSuffix(data[:i], []byte{'\r'}), nil
		}
		switch {
		case skipping:
			return len(data), nil, nil
		case len(data) >= maxLineBytes:
			skipping = true
			return len(data), data[:maxLineBytes], nil
		case atEOF && len(data) > 0:
			return len(data), data, nil
		}
		return 0, nil, nil
	}
}
