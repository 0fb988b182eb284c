// Package evidence keeps what an SRE needs to see of the moment a node went
// bad: the recent lines of its logs (a ring each, fed by the log checks as
// they read), and, when a condition turns True, a directory under stateDir
// with those lines, the kernel's pressure and memory figures, the top
// processes, the mounts and the check's own detail. Bundle packs the
// directories and the node's current state into one tar.gz for a ticket.
package evidence

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// Ring keeps the newest lines of one log within a fixed number of bytes,
// headers included: a line that does not fit pushes out the oldest. The
// bytes are one buffer, allocated at the first line, that lines are copied
// into, so that keeping a line allocates nothing and no line the caller
// hands in is held past the call.
type Ring struct {
	mu   sync.Mutex
	size int
	buf  []byte
	// head is where the oldest record starts; used how many bytes records
	// take from there, wrapping at the buffer's end.
	head, used int
}

// A record is the line's time (Unix nanoseconds) and length, then its text.
const recordHeader = 8 + 4

// NewRing returns a ring of size bytes.
func NewRing(size int) *Ring { return &Ring{size: size} }

// maxText is the most of one line a ring keeps: a tenth of it, so that one
// long line (a 64 KiB journal entry) cannot push out all the others.
func (r *Ring) maxText() int { return r.size/10 - recordHeader }

// Add keeps a line, cut to a tenth of the ring.
func (r *Ring) Add(at time.Time, text string) {
	if r == nil || r.size <= recordHeader*10 {
		return
	}
	if len(text) > r.maxText() {
		text = text[:r.maxText()]
	}
	need := recordHeader + len(text)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buf == nil {
		r.buf = make([]byte, r.size)
	}
	for r.size-r.used < need {
		var h [recordHeader]byte
		r.read(r.head, h[:])
		n := recordHeader + int(binary.LittleEndian.Uint32(h[8:]))
		r.head = (r.head + n) % r.size
		r.used -= n
	}
	var h [recordHeader]byte
	binary.LittleEndian.PutUint64(h[:8], uint64(at.UnixNano()))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(text)))
	tail := (r.head + r.used) % r.size
	n := copy(r.buf[tail:], h[:])
	copy(r.buf, h[n:])
	textAt := (tail + recordHeader) % r.size
	n = copy(r.buf[textAt:], text)
	copy(r.buf, text[n:])
	r.used += need
}

func (r *Ring) read(at int, into []byte) {
	n := copy(into, r.buf[at:])
	copy(into[n:], r.buf)
}

// Line is a kept line.
type Line struct {
	Time time.Time
	Text string
}

// Since returns, oldest first, the kept lines logged at or after t.
func (r *Ring) Since(t time.Time) []Line {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Line
	for off, left := r.head, r.used; left > 0; {
		var h [recordHeader]byte
		r.read(off, h[:])
		at := time.Unix(0, int64(binary.LittleEndian.Uint64(h[:8])))
		n := int(binary.LittleEndian.Uint32(h[8:]))
		if !at.Before(t) {
			text := make([]byte, n)
			r.read((off+recordHeader)%r.size, text)
			out = append(out, Line{Time: at, Text: string(text)})
		}
		off = (off + recordHeader + n) % r.size
		left -= recordHeader + n
	}
	return out
}

// Bytes is how much of the ring lines take, headers included.
func (r *Ring) Bytes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.used
}

// Recent is the rings of the logs the checks read: what the wiring hands
// them as checks.Env.Recent and the capturer reads.
type Recent struct {
	Kernel, Service *Ring
}

// NewRecent makes the rings; a size of zero keeps no lines of that log.
func NewRecent(kernelBytes, serviceBytes int) *Recent {
	return &Recent{Kernel: NewRing(kernelBytes), Service: NewRing(serviceBytes)}
}

// Record keeps a line of a log check.
func (r *Recent) Record(log checks.Log, at time.Time, text string) {
	switch log {
	case checks.KernelLog:
		r.Kernel.Add(at, text)
	case checks.ServiceLog:
		r.Service.Add(at, text)
	}
}
