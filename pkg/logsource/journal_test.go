//go:build journald

package logsource

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/internal/journaltest"
)

func TestJournalFollowerReadsUnitsFromRealJournalFiles(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	journaltest.Write(t, dir, "a.journal",
		journaltest.Unit(at(0), "kubelet.service", `E1123 10:00:00.123456    1234 controller.go:145] "Failed to update lease" err="context deadline exceeded"`),
		journaltest.Unit(at(1), "containerd.service", "not asked for"),
		journaltest.Unit(at(2), "kubelet.service", "second"),
	)
	var (
		mu  sync.Mutex
		got []Line
	)
	f := &JournalFollower{Dir: dir, Units: []string{"kubelet.service"}, FromStart: true, Poll: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- f.Run(ctx, "", func(e Line) { mu.Lock(); got = append(got, e); mu.Unlock() })
	}()
	waitN := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			have := len(got)
			mu.Unlock()
			if have >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d entries, want %d: %+v", have, n, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitN(2)
	// Entries written later, in a new file in the same directory, arrive too.
	journaltest.Write(t, dir, "b.journal", journaltest.Unit(at(60), "kubelet.service", "third, written while following"))
	waitN(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || !strings.Contains(got[0].Text, "Failed to update lease") || got[1].Text != "second" || got[2].Text != "third, written while following" {
		t.Errorf("entries %+v", got)
	}
	if got[0].Unit != "kubelet.service" || !got[0].Time.Equal(base) || got[0].Cursor == "" {
		t.Errorf("first entry %+v: want unit kubelet.service at %v with a cursor", got[0], base)
	}
}

// TestJournalFollowerSaysWhenItIsPositioned: following from the tail, it
// says once when it is in place; an entry written after that is read and
// one from before is not.
func TestJournalFollowerSaysWhenItIsPositioned(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	journaltest.Write(t, dir, "a.journal", journaltest.Unit(base, "kubelet.service", "before following"))
	positioned := make(chan struct{}, 10)
	got := make(chan Line, 10)
	f := &JournalFollower{Dir: dir, Units: []string{"kubelet.service"}, Poll: 50 * time.Millisecond,
		Positioned: func() { positioned <- struct{}{} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx, "", func(e Line) { got <- e }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-positioned:
	case e := <-got:
		t.Fatalf("entry %q read before Positioned was called, following from the tail", e.Text)
	case <-time.After(10 * time.Second):
		t.Fatal("Positioned not called within 10 s")
	}
	journaltest.Write(t, dir, "b.journal", journaltest.Unit(base.Add(time.Minute), "kubelet.service", "after positioned"))
	select {
	case e := <-got:
		if e.Text != "after positioned" {
			t.Errorf("first entry read %q, want the one written after Positioned", e.Text)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the entry written after Positioned was not read within 10 s")
	}
	if n := len(positioned); n != 0 {
		t.Errorf("Positioned called %d more times", n)
	}
}

// TestJournalFollowerResumesAfterACursor: given an entry's cursor, Run reads
// from the entry after it, whatever FromStart says.
func TestJournalFollowerResumesAfterACursor(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	journaltest.Write(t, dir, "a.journal",
		journaltest.Unit(base, "kubelet.service", "first"),
		journaltest.Unit(base.Add(time.Second), "kubelet.service", "second"),
		journaltest.Unit(base.Add(2*time.Second), "kubelet.service", "third"),
	)
	var bad []string
	read := func(after string, n int) []Line {
		t.Helper()
		f := &JournalFollower{Dir: dir, Units: []string{"kubelet.service"}, FromStart: true, Poll: 50 * time.Millisecond,
			BadCursor: func(cursor string, err error) { bad = append(bad, cursor) }}
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan Line, 10)
		done := make(chan error)
		go func() { done <- f.Run(ctx, after, func(l Line) { got <- l }) }()
		var lines []Line
		for len(lines) < n {
			select {
			case l := <-got:
				lines = append(lines, l)
			case <-time.After(10 * time.Second):
				t.Fatalf("read %d entries, want %d", len(lines), n)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return lines
	}
	all := read("", 3)
	if all[0].Where != "journal kubelet.service" || all[0].Unit != "kubelet.service" {
		t.Errorf("entry %+v: want it named journal kubelet.service", all[0])
	}
	tests := []struct {
		name  string
		after string
		want  []string
	}{
		{"after the first", all[0].Cursor, []string{"second", "third"}},
		{"after the second", all[1].Cursor, []string{"third"}},
		// A damaged state file: read as without a cursor, not fail on
		// every restart.
		{"a cursor the journal cannot take", "not-a-cursor", []string{"first", "second", "third"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var texts []string
			for _, l := range read(tt.after, len(tt.want)) {
				texts = append(texts, l.Text)
			}
			if strings.Join(texts, ",") != strings.Join(tt.want, ",") {
				t.Errorf("read %v, want %v", texts, tt.want)
			}
		})
	}
	if strings.Join(bad, ",") != "not-a-cursor" {
		t.Errorf("BadCursor heard of %q, want the bad cursor only", bad)
	}
}

// TestJournalFollowerIsToldOfNewEntries: with a poll of an hour, entries
// written while following still arrive at once, and Run returns at once
// when ctx ends: it waits on the directory's changes, not in libsystemd.
func TestJournalFollowerIsToldOfNewEntries(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	journaltest.Write(t, dir, "a.journal", journaltest.Unit(base, "kubelet.service", "before following"))
	positioned := make(chan struct{}, 1)
	got := make(chan Line, 10)
	f := &JournalFollower{Dir: dir, Units: []string{"kubelet.service"}, Poll: time.Hour,
		Positioned: func() { positioned <- struct{}{} },
		Unwatched:  func(err error) { t.Errorf("unwatched: %v", err) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx, "", func(e Line) { got <- e }) }()
	select {
	case <-positioned:
	case <-time.After(10 * time.Second):
		t.Fatal("Positioned not called within 10 s")
	}
	for i, name := range []string{"b.journal", "c.journal"} {
		text := "written while following " + name
		start := time.Now()
		journaltest.Write(t, dir, name, journaltest.Unit(base.Add(time.Duration(i+1)*time.Minute), "kubelet.service", text))
		select {
		case e := <-got:
			if e.Text != text {
				t.Errorf("read %q, want %q", e.Text, text)
			}
			t.Logf("%s read %s after it was written", name, time.Since(start))
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not read within 10 s, with a poll of an hour", name)
		}
	}
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Run took %s to return after ctx ended", took)
	}
}

func TestWatchJournal(t *testing.T) {
	existing, missing := t.TempDir(), filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		dirs []string
		ok   bool
	}{
		{"one directory", []string{existing}, true},
		{"one of two there", []string{missing, existing}, true},
		{"none there", []string{missing}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := watchJournal(tc.dirs)
			if (err == nil) != tc.ok {
				t.Fatalf("watchJournal(%v) = %v, want ok %t", tc.dirs, err, tc.ok)
			}
			if w == nil {
				return
			}
			defer w.Close()
			// A machine directory made later is watched too.
			sub := filepath.Join(existing, "machine-"+strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			drain := func() {
				for {
					select {
					case <-w.C:
					case <-time.After(200 * time.Millisecond):
						return
					}
				}
			}
			drain()
			if err := os.WriteFile(filepath.Join(sub, "system.journal"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			select {
			case <-w.C:
			case <-time.After(5 * time.Second):
				t.Fatal("no change told of a file written in a machine directory made after the watch began")
			}
		})
	}
}
