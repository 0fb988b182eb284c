package logsource

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type collector struct {
	mu    sync.Mutex
	lines []string
}

func (c *collector) add(l string) { c.mu.Lock(); c.lines = append(c.lines, l); c.mu.Unlock() }
func (c *collector) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func (c *collector) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Join(c.get(), "|") != strings.Join(want, "|") {
		if time.Now().After(deadline) {
			t.Fatalf("lines %q, want %q", c.get(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func follow(t *testing.T, f *FileFollower) *collector {
	t.Helper()
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx, "", func(l Line) { c.add(l.Text) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func TestFileFollowerAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kern.log")
	appendTo(t, path, "old line before start\n")
	positioned := make(chan struct{}, 10)
	c := follow(t, &FileFollower{Path: path, Poll: 10 * time.Millisecond, Positioned: func() { positioned <- struct{}{} }})
	select {
	case <-positioned:
	case <-time.After(5 * time.Second):
		t.Fatal("Positioned not called within 5 s of following an existing file")
	}

	appendTo(t, path, "one\ntw")
	time.Sleep(30 * time.Millisecond)
	appendTo(t, path, "o\n") // a line written in two parts is one line
	c.waitFor(t, "one", "two")

	// logrotate's default: rename away, create anew. A line written to the
	// old file just before the rename is not lost.
	appendTo(t, path, "last in old\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, "first in new\n")
	c.waitFor(t, "one", "two", "last in old", "first in new")

	// copytruncate: the same file emptied in place.
	time.Sleep(30 * time.Millisecond)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	appendTo(t, path, "after truncate\n")
	c.waitFor(t, "one", "two", "last in old", "first in new", "after truncate")

	// Removed, then created again later.
	os.Remove(path)
	time.Sleep(50 * time.Millisecond)
	appendTo(t, path, "reborn\r\n")
	c.waitFor(t, "one", "two", "last in old", "first in new", "after truncate", "reborn")
	// Positioned tells when following began, not each file: once.
	if n := len(positioned); n != 0 {
		t.Errorf("Positioned called %d more times after the first", n)
	}
}

func TestFileFollowerWaitsForAMissingFileAndReadsFromStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.log")
	c := follow(t, &FileFollower{Path: path, Poll: 10 * time.Millisecond, FromStart: true})
	time.Sleep(30 * time.Millisecond)
	appendTo(t, path, "a\nb\n")
	c.waitFor(t, "a", "b")
}

func TestFileFollowerCutsVeryLongLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "long.log")
	appendTo(t, path, strings.Repeat("x", maxLine+10)+"\nshort\n")
	c := follow(t, &FileFollower{Path: path, Poll: 10 * time.Millisecond, FromStart: true})
	c.waitFor(t, strings.Repeat("x", maxLine), strings.Repeat("x", 10), "short")
}
