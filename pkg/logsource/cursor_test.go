package logsource

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zaptest"
)

func TestCursorStoreSavesAndLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // made on first save
	s := CursorStore{Dir: dir}
	if got, err := s.Load("a"); got != "" || err != nil {
		t.Fatalf("Load before any save = %q, %v; want nothing", got, err)
	}
	for _, c := range []string{"one", "two"} {
		if err := s.Save("a", c); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Load("a"); got != c || err != nil {
			t.Errorf("Load = %q, %v; want %q", got, err, c)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary file is left behind: %v", err)
	}
	// No directory keeps nothing, and says so by loading nothing.
	none := CursorStore{}
	if err := none.Save("a", "x"); err != nil {
		t.Fatal(err)
	}
	if got, _ := none.Load("a"); got != "" {
		t.Errorf("a store with no directory loaded %q", got)
	}
}

// A reported line's cursor is saved at once; others wait for Flush.
func TestResumeSavesReportedLinesAtOnce(t *testing.T) {
	tests := []struct {
		name     string
		lines    []string
		reported []bool
		flush    bool
		want     string
	}{
		{"reported", []string{"1", "2"}, []bool{false, true}, false, "2"},
		{"not reported, not flushed", []string{"1", "2"}, []bool{true, false}, false, "1"},
		{"not reported, flushed", []string{"1", "2"}, []bool{true, false}, true, "2"},
		{"a line without a cursor keeps the last", []string{"1", ""}, []bool{false, true}, true, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := CursorStore{Dir: t.TempDir()}
			r := s.Resume("c", zaptest.NewLogger(t))
			if r.From() != "" {
				t.Fatalf("From = %q on a first start", r.From())
			}
			for i, l := range tt.lines {
				r.Done(l, tt.reported[i])
			}
			if tt.flush {
				r.Flush()
			}
			if got, _ := s.Load("c"); got != tt.want {
				t.Errorf("saved %q, want %q", got, tt.want)
			}
			if next := s.Resume("c", zaptest.NewLogger(t)); next.From() != tt.want {
				t.Errorf("the next start resumes after %q, want %q", next.From(), tt.want)
			}
		})
	}
}

// stoppingSource emits its lines and returns, as a broken follower would.
type stoppingSource struct {
	lines []Line
	after string
}

func (s *stoppingSource) Run(ctx context.Context, after string, emit func(Line)) error {
	s.after = after
	for _, l := range s.lines {
		emit(l)
	}
	return nil
}

func TestFollowResumesAndSaysWhenASourceStops(t *testing.T) {
	store := CursorStore{Dir: t.TempDir()}
	if err := store.Save("src", "c1"); err != nil {
		t.Fatal(err)
	}
	src := &stoppingSource{lines: []Line{{Text: "a", Cursor: "c2"}, {Text: "b", Cursor: "c3"}}}
	var handled []string
	err := Follow(context.Background(), src, store.Resume("src", zaptest.NewLogger(t)), func(l Line) bool {
		handled = append(handled, l.Text)
		return false
	})
	if !errors.Is(err, ErrStopped) {
		t.Errorf("Follow = %v, want ErrStopped", err)
	}
	if src.after != "c1" || len(handled) != 2 {
		t.Errorf("source ran after %q and %v was handled, want after c1 and both lines", src.after, handled)
	}
	// Stopping flushes: the next start does not read b again.
	if got, _ := store.Load("src"); got != "c3" {
		t.Errorf("saved %q after the source stopped, want c3", got)
	}
	// A nil Resume keeps nothing and starts the source without a cursor.
	src.after = "unset"
	Follow(context.Background(), src, nil, func(Line) bool { return true })
	if src.after != "" {
		t.Errorf("with no Resume the source ran after %q, want none", src.after)
	}
}
