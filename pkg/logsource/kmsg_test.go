package logsource

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/euank/go-kmsg-parser/v3/kmsgparser"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
)

// fakeParser stands in for /dev/kmsg: it hands out its messages (none after
// SeekEnd, as the kernel's end has nothing yet), then ends with err or
// waits to be closed.
type fakeParser struct {
	msgs    []kmsgparser.Message
	err     error
	seekEnd bool
	closed  chan struct{}
	once    sync.Once
}

func (p *fakeParser) SeekEnd() error { p.seekEnd = true; return nil }
func (p *fakeParser) Close() error   { p.once.Do(func() { close(p.closed) }); return nil }
func (p *fakeParser) Parse(out chan<- kmsgparser.Message) error {
	defer close(out)
	if !p.seekEnd {
		for _, m := range p.msgs {
			select {
			case out <- m:
			case <-p.closed:
				return nil
			}
		}
	}
	if p.err != nil {
		return p.err
	}
	<-p.closed
	return nil
}

// kmsgUnder runs a Kmsg over fake parsers, one per open, in a /proc whose
// boot ID is bootID ("" for none), and returns what it emitted once want
// lines are out and nothing more comes.
func kmsgUnder(t *testing.T, k *Kmsg, bootID, after string, want int, parsers ...*fakeParser) []Line {
	t.Helper()
	proc := t.TempDir()
	if bootID != "" {
		os.MkdirAll(filepath.Join(proc, "sys/kernel/random"), 0o755)
		os.WriteFile(filepath.Join(proc, "sys/kernel/random/boot_id"), []byte(bootID+"\n"), 0o644)
	}
	k.ProcPath, k.Log = proc, zaptest.NewLogger(t)
	if k.Metrics == nil {
		k.Metrics = NewKmsgMetrics(prometheus.NewRegistry())
	}
	var mu sync.Mutex
	opened := 0
	k.newParser = func(kmsgparser.Logger) (kmsgparser.Parser, error) {
		mu.Lock()
		defer mu.Unlock()
		if opened == len(parsers) {
			return nil, errors.New("no more fake parsers")
		}
		p := parsers[opened]
		p.closed = make(chan struct{})
		opened++
		return p, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Line, 100)
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx, after, func(l Line) { got <- l }) }()
	var out []Line
	for len(out) < want {
		select {
		case l := <-got:
			out = append(out, l)
		case err := <-done:
			t.Fatalf("Run returned %v after %d lines, want %d", err, len(out), want)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d lines, want %d: %+v", len(out), want, out)
		}
	}
	select {
	case l := <-got:
		t.Errorf("unexpected extra line %+v", l)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v once stopped, want nil", err)
	}
	return out
}

func texts(lines []Line) string {
	var s []string
	for _, l := range lines {
		s = append(s, l.Text)
	}
	return strings.Join(s, ",")
}

func TestKmsgResumesInTheSameBootOnly(t *testing.T) {
	now := time.Now()
	msg := func(seq int, age time.Duration, text string) kmsgparser.Message {
		return kmsgparser.Message{SequenceNumber: seq, Timestamp: now.Add(-age), Message: text}
	}
	backlog := []kmsgparser.Message{msg(9, time.Hour, "old"), msg(10, time.Minute, "ten"), msg(11, 0, "eleven\n SUBSYSTEM=x")}
	cursor := func(boot string, seq int) string { return fmt.Sprintf(`{"bootID":%q,"lastSeq":%d}`, boot, seq) }
	tests := []struct {
		name       string
		bootID     string
		after      string
		startAtEnd bool
		want       string
	}{
		{"first start: the backlog within the lookback", "boot-a", "", false, "ten,eleven"},
		{"first start at the end", "boot-a", "", true, ""},
		{"resume in the same boot: all after, however old", "boot-a", cursor("boot-a", 9), true, "ten,eleven"},
		{"resume after the last", "boot-a", cursor("boot-a", 11), false, ""},
		{"another boot's cursor is none", "boot-b", cursor("boot-a", 10), false, "ten,eleven"},
		{"a cursor that cannot be read is none", "boot-a", "garbage", false, "ten,eleven"},
		{"no boot ID: read as a first start", "", cursor("", 10), false, "ten,eleven"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := 0
			if tt.want != "" {
				want = len(strings.Split(tt.want, ","))
			}
			k := &Kmsg{StartAtEnd: tt.startAtEnd, BacklogLookback: 10 * time.Minute, Now: func() time.Time { return now }}
			got := kmsgUnder(t, k, tt.bootID, tt.after, want, &fakeParser{msgs: backlog})
			if texts(got) != tt.want {
				t.Errorf("read %q, want %q", texts(got), tt.want)
			}
			wantCursor := "" // no boot ID, no cursor
			if tt.bootID != "" {
				wantCursor = cursor(tt.bootID, 11)
			}
			for _, l := range got {
				if l.Text == "eleven" && (l.Cursor != wantCursor || l.Where != "kmsg seq 11" || !l.Time.Equal(now)) {
					t.Errorf("line %+v: want cursor %s, named kmsg seq 11, read now", l, wantCursor)
				}
				if l.Text == "ten" && !l.Time.Equal(now.Add(-time.Minute)) {
					t.Errorf("backlog line %+v: want the kernel's time", l)
				}
			}
		})
	}
}

// A record go-kmsg-parser cannot parse ends its Parse; the source counts
// it and opens /dev/kmsg again after the last record it delivered.
func TestKmsgSkipsAMalformedRecord(t *testing.T) {
	now := time.Now()
	m := func(seq int) kmsgparser.Message {
		return kmsgparser.Message{SequenceNumber: seq, Timestamp: now, Message: fmt.Sprint("record ", seq)}
	}
	metrics := NewKmsgMetrics(prometheus.NewRegistry())
	k := &Kmsg{Metrics: metrics, Now: func() time.Time { return now }}
	got := kmsgUnder(t, k, "boot-a", "", 3,
		&fakeParser{msgs: []kmsgparser.Message{m(1), m(2)}, err: errors.New("malformed message")},
		&fakeParser{msgs: []kmsgparser.Message{m(1), m(2), m(3)}})
	if texts(got) != "record 1,record 2,record 3" {
		t.Errorf("read %q, want each record once", texts(got))
	}
	if n := testutil.ToFloat64(metrics.malformed); n != 1 {
		t.Errorf("malformed records counted %v, want 1", n)
	}
	if n := testutil.ToFloat64(metrics.records); n != 3 {
		t.Errorf("records counted %v, want 3", n)
	}
}

// go-kmsg-parser reports an overrun (EPIPE: the ring buffer wrapped past the
// reader) only through its logger's Warningf; that is what is counted.
func TestParserLoggerCountsOverruns(t *testing.T) {
	m := NewKmsgMetrics(prometheus.NewRegistry())
	l := parserLogger{log: zaptest.NewLogger(t), overruns: m.overruns}
	l.Warningf("short read from kmsg; skipping")
	l.Warningf("something else")
	l.Infof("info %d", 1)
	if got := testutil.ToFloat64(m.overruns); got != 1 {
		t.Errorf("overruns counted %v, want 1", got)
	}
}

// TestDevKmsgDeliversRealRecords writes to the real kernel log and reads it
// back through go-kmsg-parser.
func TestDevKmsgDeliversRealRecords(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes to /dev/kmsg")
	}
	reg := prometheus.NewRegistry()
	src := &Kmsg{Log: zaptest.NewLogger(t), Metrics: NewKmsgMetrics(reg), StartAtEnd: true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan Line, 64)
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, "", func(l Line) { out <- l }) }()
	time.Sleep(300 * time.Millisecond) // let it open and seek to the end
	marker := fmt.Sprintf("nodeguard-kmsg-test-%d", rand.Int64())
	if err := os.WriteFile("/dev/kmsg", []byte("<2>"+marker+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case l := <-out:
			if l.Text != marker {
				continue
			}
			if time.Since(l.Time) > 5*time.Second || !strings.HasPrefix(l.Where, "kmsg seq ") || !strings.Contains(l.Cursor, `"lastSeq"`) {
				t.Errorf("line %+v: want a time of now, a sequence number and a cursor", l)
			}
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("source returned %v on shutdown, want nil", err)
			}
			if testutil.ToFloat64(src.Metrics.records) < 1 {
				t.Error("records metric not counted")
			}
			return
		case err := <-errc:
			t.Fatalf("source stopped: %v", err)
		case <-deadline:
			t.Fatalf("record %q not read back from /dev/kmsg", marker)
		}
	}
}
