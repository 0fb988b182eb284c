//go:build journald

package logsource

import (
	"context"
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
		got []JournalEntry
	)
	f := &JournalFollower{Dir: dir, Units: []string{"kubelet.service"}, FromStart: true, Poll: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- f.Run(ctx, func(e JournalEntry) { mu.Lock(); got = append(got, e); mu.Unlock() })
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
	if len(got) != 3 || !strings.Contains(got[0].Message, "Failed to update lease") || got[1].Message != "second" || got[2].Message != "third, written while following" {
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
	got := make(chan JournalEntry, 10)
	f := &JournalFollower{Dir: dir, Units: []string{"kubelet.service"}, Poll: 50 * time.Millisecond,
		Positioned: func() { positioned <- struct{}{} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx, func(e JournalEntry) { got <- e }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-positioned:
	case e := <-got:
		t.Fatalf("entry %q read before Positioned was called, following from the tail", e.Message)
	case <-time.After(10 * time.Second):
		t.Fatal("Positioned not called within 10 s")
	}
	journaltest.Write(t, dir, "b.journal", journaltest.Unit(base.Add(time.Minute), "kubelet.service", "after positioned"))
	select {
	case e := <-got:
		if e.Message != "after positioned" {
			t.Errorf("first entry read %q, want the one written after Positioned", e.Message)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the entry written after Positioned was not read within 10 s")
	}
	if n := len(positioned); n != 0 {
		t.Errorf("Positioned called %d more times", n)
	}
}
