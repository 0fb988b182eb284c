package logrules

import (
	"bufio"
	"fmt"
	"io"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// maxLineBytes bounds one line of a replayed log; a longer line is cut, not
// an error, since kernel text has no such limit of its own.
const maxLineBytes = 1 << 20

// Replay runs the engine over a kernel log read from r, in any mix of the
// /dev/kmsg record, dmesg and plain forms, and calls emit for each finding.
// Time windows use the lines' own timestamps; a line without one takes the
// time of the line before it. name labels each finding's source line.
func Replay(r io.Reader, name string, e *Engine, emit func(checks.Finding)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLineBytes)
	var (
		now = time.Unix(0, 0).UTC()
		n   int
		buf []checks.Finding
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
		buf = e.Expire(now, buf[:0])
		buf = e.Feed(Line{Text: p.Text, Time: now}, buf)
		for _, f := range buf {
			f.Source = fmt.Sprintf("%s:%d", name, n)
			emit(f)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s after line %d: %w", name, n, err)
	}
	return nil
}
