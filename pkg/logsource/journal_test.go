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
