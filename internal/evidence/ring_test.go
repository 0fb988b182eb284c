package evidence

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

func TestRingIsBoundedInBytes(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		size  int
		lines int
		width int // bytes of each line's text
	}{
		{"few short lines, nothing dropped", 4096, 10, 20},
		{"many short lines wrap many times", 4096, 10000, 37},
		{"lines of odd lengths", 1000, 997, 13},
		{"long lines are cut to a tenth", 2000, 50, 5000},
		{"the default kernel ring under a flood", 256 << 10, 100000, 120},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRing(tc.size)
			for i := range tc.lines {
				text := fmt.Sprintf("%06d %s", i, strings.Repeat("x", tc.width))
				r.Add(t0.Add(time.Duration(i)*time.Millisecond), text)
				if r.Bytes() > tc.size {
					t.Fatalf("after line %d the ring holds %d bytes, over its %d", i, r.Bytes(), tc.size)
				}
			}
			got := r.Since(time.Time{})
			if len(got) == 0 {
				t.Fatal("the ring kept no line")
			}
			// The newest line is always kept, whole or cut to a tenth.
			last := got[len(got)-1]
			if !strings.HasPrefix(last.Text, fmt.Sprintf("%06d ", tc.lines-1)) || !last.Time.Equal(t0.Add(time.Duration(tc.lines-1)*time.Millisecond)) {
				t.Errorf("newest kept line %q at %s, want line %d", last.Text[:min(20, len(last.Text))], last.Time, tc.lines-1)
			}
			if len(last.Text) > tc.size/10 {
				t.Errorf("a kept line has %d bytes, over a tenth of the ring", len(last.Text))
			}
			// What is kept is the newest lines, in order, none missing
			// between the oldest kept and the newest.
			first := tc.lines - len(got)
			for i, l := range got {
				if want := fmt.Sprintf("%06d ", first+i); !strings.HasPrefix(l.Text, want) {
					t.Fatalf("kept line %d is %q, want it to start %q", i, l.Text[:min(20, len(l.Text))], want)
				}
			}
			used := 0
			for _, l := range got {
				used += recordHeader + len(l.Text)
			}
			if used != r.Bytes() || used > tc.size {
				t.Errorf("kept lines take %d bytes, the ring says %d, its size %d", used, r.Bytes(), tc.size)
			}
			if tc.lines > 10 && r.Bytes() < tc.size/2 {
				t.Errorf("the ring uses only %d of %d bytes", r.Bytes(), tc.size)
			}
		})
	}
}

func TestRingSinceAndRecent(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	rec := NewRecent(4096, 4096)
	var r checks.Recorder = rec
	for i := range 10 {
		r.Record(checks.KernelLog, t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("kernel %d", i))
	}
	r.Record(checks.ServiceLog, t0, "kubelet.service: hello")
	got := rec.Kernel.Since(t0.Add(7 * time.Minute))
	if len(got) != 3 || got[0].Text != "kernel 7" || got[2].Text != "kernel 9" {
		t.Errorf("lines since minute 7: %+v", got)
	}
	if s := rec.Service.Since(time.Time{}); len(s) != 1 || s[0].Text != "kubelet.service: hello" {
		t.Errorf("service lines: %+v", s)
	}
	// A ring of no size keeps nothing, and costs nothing.
	none := NewRing(0)
	none.Add(t0, "x")
	if none.Since(time.Time{}) != nil || none.buf != nil {
		t.Error("a ring of size 0 kept a line")
	}
}

func BenchmarkRingAdd(b *testing.B) {
	r := NewRing(256 << 10)
	line := "EXT4-fs (sda1): re-mounted 5a1c3e2b-8f0d-4e59-9b6c-1f3a2d4c5e6f. Quota mode: none."
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r.Add(now, line)
	}
}
