package reporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// eventServer is a fake API server that can be down, refuses events of
// one reason as invalid, and keeps the order events were created in.
type eventServer struct {
	client *fake.Clientset
	down   atomic.Bool
	refuse string

	mu       sync.Mutex
	creates  []string // reasons/messages, in order
	refusals int
}

func newEventServer(refuse string) *eventServer {
	s := &eventServer{client: fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}), refuse: refuse}
	s.client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if s.down.Load() {
			return true, nil, errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
		}
		c, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetResource().Resource != "events" {
			return false, nil, nil
		}
		ev := c.GetObject().(*corev1.Event)
		s.mu.Lock()
		defer s.mu.Unlock()
		if ev.Reason == s.refuse {
			s.refusals++
			return true, nil, apierrors.NewInvalid(schema.GroupKind{Kind: "Event"}, ev.Name,
				field.ErrorList{field.Invalid(field.NewPath("reason"), ev.Reason, "refused by the test")})
		}
		s.creates = append(s.creates, ev.Reason+"/"+ev.Message)
		return false, nil, nil
	})
	return s
}

// created lists the events created so far, but the agent's outage report.
func (s *eventServer) created() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.creates), func(c string) bool { return strings.HasPrefix(c, "APIServerUnreachable/") })
}

// events lists the server's events of the given reasons (all with none).
func (s *eventServer) events(t *testing.T, reasons ...string) []corev1.Event {
	t.Helper()
	list, err := s.client.Tracker().List(schema.GroupVersionResource{Version: "v1", Resource: "events"},
		schema.GroupVersionKind{Version: "v1", Kind: "Event"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, ev := range list.(*corev1.EventList).Items {
		if len(reasons) == 0 || slices.Contains(reasons, ev.Reason) {
			out = append(out, ev)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FirstTimestamp.Before(&out[j].FirstTimestamp) })
	return out
}

// runEventSink runs a node sink with opts against srv, and a reporter
// feeding it, until the test ends.
func runEventSink(t *testing.T, srv *eventServer, opts NodeSinkOptions) (*NodeSink, *Reporter) {
	t.Helper()
	log := zaptest.NewLogger(t)
	s := newTestSink(t, srv.client, log, prometheus.NewRegistry(), opts)
	rep := New(log, nil, s)
	t.Cleanup(startFromNode(t, s, rep, time.Time{}))
	return s, rep
}

// waitFor polls, in the bubble's time, until ok or the limit.
func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		synctest.Wait()
		if ok() {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

var testReasons = []string{"TaskHung", "IOError", "NetdevTxTimeout", "GPUXid", "NVMeTimeout", "SoftLockup", "XFSError", "Ext4Error", "MemoryHardwareError", "UnregisterNetDevice"}

// An outage of ten minutes: every event found in it reaches the Node after
// it, oldest first, with its own time, within the rate limit's pace.
func TestEventsOfAnOutageAreDeliveredOldestFirstWithTheirTimes(t *testing.T) {
	for _, tt := range []struct {
		name string
		disk bool
	}{{"spool on disk", true}, {"spool in memory", false}} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newEventServer("")
				log := zaptest.NewLogger(t)
				opts := NodeSinkOptions{NodeName: "n1", EventQPS: 1, EventBurst: 5}
				if tt.disk {
					opts.SpoolDir = filepath.Join(t.TempDir(), "events")
				}
				s := newTestSink(t, srv.client, log, prometheus.NewRegistry(), opts)
				rep := New(log, nil, s)
				defer startFromNode(t, s, rep, time.Time{})()
				synctest.Wait()
				srv.down.Store(true)
				var want []string
				times := map[string]time.Time{}
				for i := range 30 {
					f := finding.Event(finding.SeverityWarning, testReasons[i%len(testReasons)], fmt.Sprintf("problem %d", i))
					f.Time = time.Now()
					rep.Report(f)
					want = append(want, f.Reason+"/"+f.Message)
					times[f.Message] = f.Time
					time.Sleep(20 * time.Second)
				}
				synctest.Wait()
				if tt.disk {
					if n := len(spoolFiles(t, opts.SpoolDir)); n != 30 {
						t.Errorf("%d spool files during the outage, want 30", n)
					}
				}
				srv.down.Store(false)
				took := waitFor(t, 5*time.Minute, "30 events delivered", func() bool { return len(srv.created()) >= 30 })
				// Burst 5, then one a second; the first retry after the
				// server's return may wait out a backoff of up to 10 s.
				if took < 25*time.Second || took > 40*time.Second {
					t.Errorf("30 events delivered in %s, want 25 s to 40 s (burst 5, 1 a second)", took)
				}
				if got := srv.created(); !slices.Equal(got, want) {
					t.Errorf("created in the order\n%q\nwant\n%q", got, want)
				}
				for _, ev := range srv.events(t, testReasons...) {
					if at := times[ev.Message]; !ev.FirstTimestamp.Time.Equal(at) || !ev.LastTimestamp.Time.Equal(at) || ev.Count != 1 {
						t.Errorf("event %q: first %s, last %s, count %d; want both %s, count 1", ev.Message, ev.FirstTimestamp, ev.LastTimestamp, ev.Count, at)
					}
				}
				if tt.disk {
					synctest.Wait()
					if files := spoolFiles(t, opts.SpoolDir); len(files) != 0 {
						t.Errorf("spool files left after delivery: %q", files)
					}
				}
			})
		})
	}
}

// The next agent sends what the last one left in the spool, and none of
// it twice: an event already created (the agent killed between the write
// and the removal of its file) is not created again.
func TestAnEventSpooledBeforeARestartIsSentOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "events")
	synctest.Test(t, func(t *testing.T) {
		srv := newEventServer("")
		log := zaptest.NewLogger(t)
		s := newTestSink(t, srv.client, log, prometheus.NewRegistry(), NodeSinkOptions{NodeName: "n1", SpoolDir: dir})
		rep := New(log, nil, s)
		stop := startFromNode(t, s, rep, time.Time{})
		synctest.Wait()
		srv.down.Store(true)
		for i := range 10 {
			rep.Report(finding.Event(finding.SeverityWarning, testReasons[i], fmt.Sprintf("before the restart %d", i)))
			time.Sleep(time.Second)
		}
		synctest.Wait()
		stop()
	})
	recs, corrupt, err := spoolDir{dir: dir}.load()
	if err != nil || len(corrupt) > 0 || len(recs) != 10 {
		t.Fatalf("spool after the first agent: %d records, corrupt %v, %v; want 10", len(recs), corrupt, err)
	}
	synctest.Test(t, func(t *testing.T) {
		srv := newEventServer("")
		// What the first agent sent before it was killed.
		for _, rec := range recs[:4] {
			ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: rec.Name, Namespace: "default"}, Reason: rec.Reason,
				Message: rec.Message, Count: 1, FirstTimestamp: metav1.NewTime(rec.First), LastTimestamp: metav1.NewTime(rec.Last)}
			if _, err := srv.client.CoreV1().Events("default").Create(context.Background(), ev, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		runEventSink(t, srv, NodeSinkOptions{NodeName: "n1", SpoolDir: dir})
		waitFor(t, time.Minute, "the spool sent", func() bool { return len(spoolFiles(t, dir)) == 0 })
		evs := srv.events(t, testReasons...)
		seen := map[string]int32{}
		for _, ev := range evs {
			seen[ev.Message] += ev.Count
		}
		if len(evs) != 10 || len(seen) != 10 {
			t.Errorf("%d events, %d distinct, want 10 of each", len(evs), len(seen))
		}
		for msg, n := range seen {
			if n != 1 {
				t.Errorf("%q counted %d times, want once", msg, n)
			}
		}
	})
}

// A spool filled past its cap: what found no room is counted per reason,
// in the metric and in one summary event.
func TestSpoolOverflowIsCountedPerReasonAndSummarisedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newEventServer("")
		s, rep := runEventSink(t, srv, NodeSinkOptions{NodeName: "n1", SpoolSize: 5,
			SpoolDir: filepath.Join(t.TempDir(), "events"), SummaryInterval: time.Minute})
		synctest.Wait()
		srv.down.Store(true)
		reasons := []string{"A", "B", "C", "D"}
		for i := range 20 {
			rep.Report(finding.Event(finding.SeverityWarning, reasons[i%4], fmt.Sprintf("flood %d", i)))
			time.Sleep(10 * time.Second)
		}
		want := map[string]float64{"A": 3, "B": 4, "C": 4, "D": 4}
		for reason, n := range want {
			if got := testutil.ToFloat64(s.events.metrics.suppressed.WithLabelValues(reason)); got != n {
				t.Errorf("suppressed %s: %v, want %v", reason, got, n)
			}
		}
		srv.down.Store(false)
		waitFor(t, time.Minute, "the spool sent", func() bool { return len(srv.events(t, reasons...)) == 5 })
		time.Sleep(2 * time.Minute) // no second summary comes
		summaries := srv.events(t, "EventsSuppressed")
		if len(summaries) != 1 {
			t.Fatalf("%d EventsSuppressed events, want 1", len(summaries))
		}
		if msg := summaries[0].Message; !strings.HasPrefix(msg, "15 events were not sent") || !strings.Contains(msg, "A x3, B x4, C x4, D x4") {
			t.Errorf("summary %q, want 15 events, A x3, B x4, C x4, D x4", msg)
		}
	})
}

// An event the API server refuses as invalid is dropped and counted, and
// holds back no other.
func TestInvalidEventIsDroppedNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newEventServer("Refused")
		s, rep := runEventSink(t, srv, NodeSinkOptions{NodeName: "n1"})
		rep.Report(finding.Event(finding.SeverityWarning, "Refused", "not valid"))
		rep.Report(finding.Event(finding.SeverityWarning, "Fine", "valid"))
		waitFor(t, time.Minute, "the valid event", func() bool { return len(srv.events(t, "Fine")) == 1 })
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		srv.mu.Lock()
		refusals := srv.refusals
		srv.mu.Unlock()
		if refusals != 1 {
			t.Errorf("the invalid event was sent %d times, want once", refusals)
		}
		if got := testutil.ToFloat64(s.events.metrics.invalid.WithLabelValues("Refused")); got != 1 {
			t.Errorf("invalid events counted %v, want 1", got)
		}
		if n := len(s.events.pending); n != 0 {
			t.Errorf("%d records left in the spool", n)
		}
	})
}

// Repeats are aggregated as client-go's recorder aggregates them, whether
// the first was sent already or not.
func TestRepeatsAreAggregatedAsTheRecorderDoes(t *testing.T) {
	type sent struct {
		message string
		count   int32
	}
	for _, tt := range []struct {
		name     string
		messages []string
		// down keeps them all in the spool until the end.
		down bool
		want []sent
	}{
		{"identical, sent one by one", []string{"m", "m", "m"}, false, []sent{{"m", 3}}},
		{"identical, in the spool", []string{"m", "m", "m"}, true, []sent{{"m", 3}}},
		{"similar past nine", []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m0"}, false, []sent{
			{"m0", 1}, {"m1", 1}, {"m2", 1}, {"m3", 1}, {"m4", 1}, {"m5", 1}, {"m6", 1}, {"m7", 1}, {"m8", 1},
			{combinedPrefix + "m0", 3}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newEventServer("")
				s, rep := runEventSink(t, srv, NodeSinkOptions{NodeName: "n1"})
				synctest.Wait()
				srv.down.Store(tt.down)
				for _, m := range tt.messages {
					rep.Report(finding.Event(finding.SeverityWarning, "R", m))
					time.Sleep(time.Second)
					synctest.Wait()
				}
				srv.down.Store(false)
				waitFor(t, time.Minute, "the spool sent", func() bool {
					s.events.mu.Lock()
					defer s.events.mu.Unlock()
					return len(s.events.pending) == 0
				})
				var got []sent
				for _, ev := range srv.events(t, "R") {
					got = append(got, sent{ev.Message, ev.Count})
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("events %v, want %v", got, tt.want)
				}
			})
		})
	}
}

func TestSpoolLoadSkipsAndCountsCorruptFiles(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	record := func(seq uint64) []byte {
		b, _ := json.Marshal(eventRecord{V: spoolVersion, Seq: seq, Name: eventName("n1", seq), Type: "Warning",
			Reason: "TaskHung", Message: "m", First: now, Last: now, Count: 1})
		return b
	}
	name := func(seq uint64) string { return fmt.Sprintf("%016x.json", seq) }
	for _, tt := range []struct {
		name        string
		files       map[string][]byte
		wantSeqs    []uint64
		wantCorrupt int
	}{
		{"whole records", map[string][]byte{name(2): record(2), name(1): record(1)}, []uint64{1, 2}, 0},
		{"truncated", map[string][]byte{name(1): record(1), name(2): record(2)[:20]}, []uint64{1}, 1},
		{"garbage", map[string][]byte{name(1): []byte("\x00\xff garbage")}, nil, 1},
		{"empty", map[string][]byte{name(1): {}}, nil, 1},
		{"another record's content", map[string][]byte{name(1): record(2)}, nil, 1},
		{"not a record's name", map[string][]byte{"notes.txt": []byte("hi")}, nil, 1},
		{"another format", map[string][]byte{name(1): []byte(`{"v":2,"seq":1}`)}, nil, 1},
		{"a write cut short", map[string][]byte{name(1): record(1), name(2) + ".tmp": record(2)[:5]}, []uint64{1}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			recs, corrupt, err := spoolDir{dir: dir}.load()
			if err != nil {
				t.Fatal(err)
			}
			var seqs []uint64
			for _, r := range recs {
				seqs = append(seqs, r.Seq)
			}
			if !slices.Equal(seqs, tt.wantSeqs) || len(corrupt) != tt.wantCorrupt {
				t.Errorf("loaded %v with %d corrupt (%v), want %v with %d", seqs, len(corrupt), corrupt, tt.wantSeqs, tt.wantCorrupt)
			}
			// Skipped files are gone, so that the next start does not
			// count them again; whole records stay until they are sent.
			if left := spoolFiles(t, dir); len(left) != len(tt.wantSeqs) {
				t.Errorf("files left %q, want the %d records", left, len(tt.wantSeqs))
			}
		})
	}
}

// An agent starts, and counts, over a spool with corrupt files in it.
func TestCorruptSpoolFilesAreCountedAtStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "events")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "0000000000000001.json"), []byte(`{"v":1,"seq":1,"na`), 0o600)
	os.WriteFile(filepath.Join(dir, "0000000000000002.json"), []byte("garbage"), 0o600)
	synctest.Test(t, func(t *testing.T) {
		srv := newEventServer("")
		s, rep := runEventSink(t, srv, NodeSinkOptions{NodeName: "n1", SpoolDir: dir})
		rep.Report(finding.Event(finding.SeverityWarning, "TaskHung", "after the start"))
		waitFor(t, time.Minute, "the new event", func() bool { return len(srv.events(t, "TaskHung")) == 1 })
		if got := testutil.ToFloat64(s.events.metrics.corrupt); got != 2 {
			t.Errorf("corrupt files counted %v, want 2", got)
		}
	})
}

func TestTokenBucket(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &tokenBucket{rate: 0.5, burst: 2}
	for _, tt := range []struct {
		at   time.Duration
		take bool
		want time.Duration
	}{
		{0, true, 0},
		{0, true, 0},
		{0, false, 2 * time.Second},
		{time.Second, false, time.Second},
		{2 * time.Second, true, 0},
		{2 * time.Second, false, 2 * time.Second},
		{time.Hour, true, 0},
		{time.Hour, true, 0},
		{time.Hour, false, 2 * time.Second},
	} {
		got := b.wait(start.Add(tt.at))
		if got != tt.want {
			t.Errorf("at %s: wait %s, want %s", tt.at, got, tt.want)
		}
		if tt.take {
			b.take()
		}
	}
}

func TestEventNameIsAnObjectName(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	for _, tt := range []struct{ node, want string }{
		{"n1", "n1.ff"},
		{a(250), a(250) + ".ff"},
		{a(252), a(250) + ".ff"},
		// A cut must not leave a label ending in a dash.
		{a(249) + "-bb", a(249) + ".ff"},
	} {
		if got := eventName(tt.node, 0xff); got != tt.want {
			t.Errorf("eventName(%d bytes) = %d bytes %q, want %q", len(tt.node), len(got), got, tt.want)
		}
	}
}

// earlySink is a recordSink that takes events before Start.
type earlySink struct{ recordSink }

func (*earlySink) TakesEventsBeforeStart() {}

// Events found before the Node is read reach an early sink at once, and
// the others at Start; each sink gets each event once.
func TestEarlyEventSinksGetEventsBeforeStart(t *testing.T) {
	early, late := &earlySink{}, &recordSink{}
	r := New(zaptest.NewLogger(t), nil, early, late)
	r.Report(finding.Event(finding.SeverityWarning, "TaskHung", "before"))
	if len(early.got) != 1 || len(late.got) != 0 {
		t.Fatalf("before Start: early sink %d events, other %d; want 1 and 0", len(early.got), len(late.got))
	}
	r.Start(nil, time.Time{})
	r.Report(finding.Event(finding.SeverityWarning, "TaskHung", "after"))
	for name, got := range map[string][]finding.Finding{"early": early.got, "other": late.got} {
		if len(got) != 2 || got[0].Message != "before" || got[1].Message != "after" {
			t.Errorf("%s sink got %v, want before then after, once each", name, got)
		}
	}
}

// TestReasonPolicies: the per-reason settings decide before an event is
// spooled, and count what they hold back.
func TestReasonPolicies(t *testing.T) {
	off := false
	type event struct {
		d     time.Duration
		count int
	}
	tests := []struct {
		name   string
		policy finding.EventPolicy
		events []event
		want   []admission
		// held is what the metric counts in the end.
		held    float64
		heldWhy string
	}{
		{name: "no settings", events: []event{{0, 1}, {1, 1}}, want: []admission{admitted, admitted}},
		{name: "disabled", policy: finding.EventPolicy{Enabled: &off}, events: []event{{0, 1}, {1, 3}},
			want: []admission{held, held}, held: 4, heldWhy: "disabled"},
		{name: "the third within the window is sent, and the count starts over",
			policy: finding.EventPolicy{MinOccurrences: 3, Window: finding.Duration{Duration: 10 * time.Minute}},
			events: []event{{0, 1}, {time.Minute, 1}, {2 * time.Minute, 1}, {3 * time.Minute, 1}},
			want:   []admission{held, held, admitted, held}, held: 3, heldWhy: "minOccurrences"},
		{name: "occurrences older than the window do not count",
			policy: finding.EventPolicy{MinOccurrences: 2, Window: finding.Duration{Duration: 10 * time.Minute}},
			events: []event{{0, 1}, {10 * time.Minute, 1}, {11 * time.Minute, 1}},
			want:   []admission{held, held, admitted}, held: 2, heldWhy: "minOccurrences"},
		{name: "a storm's summary counts its lines",
			policy: finding.EventPolicy{MinOccurrences: 5, Window: finding.Duration{Duration: time.Minute}},
			events: []event{{0, 1}, {time.Second, 40}},
			want:   []admission{held, admitted}, held: 1, heldWhy: "minOccurrences"},
		{name: "an hour's budget, then refilled evenly", policy: finding.EventPolicy{EventsPerHour: 2},
			events: []event{{0, 1}, {1, 1}, {2, 1}, {30 * time.Minute, 1}, {30*time.Minute + 1, 1}},
			want:   []admission{admitted, admitted, overBudget, admitted, overBudget}},
	}
	t0 := time.Unix(10_000, 0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newReasonGate(map[string]finding.EventPolicy{"IOError": tt.policy}, prometheus.NewRegistry())
			for i, ev := range tt.events {
				if got := g.admit("IOError", ev.count, t0.Add(ev.d)); got != tt.want[i] {
					t.Errorf("event %d (at %v, count %d): %v, want %v", i, ev.d, ev.count, got, tt.want[i])
				}
			}
			if tt.heldWhy != "" {
				if got := testutil.ToFloat64(g.held.WithLabelValues("IOError", tt.heldWhy)); got != tt.held {
					t.Errorf("held (%s) = %v, want %v", tt.heldWhy, got, tt.held)
				}
			}
			// Another reason has none of these settings.
			if g.admit("NICLinkDown", 1, t0) != admitted {
				t.Error("a reason without settings was refused")
			}
		})
	}
}

// What a reason's hourly budget refuses is counted and summarised with
// what the spool had no room for.
func TestReasonBudgetIsSuppressedAndSummarised(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newEventServer("")
		s, rep := runEventSink(t, srv, NodeSinkOptions{NodeName: "n1",
			Reasons: map[string]finding.EventPolicy{"IOError": {EventsPerHour: 3}}})
		for i := range 10 {
			rep.Report(finding.Event(finding.SeverityWarning, "IOError", fmt.Sprintf("I/O error, sector %d", i)))
		}
		waitFor(t, time.Minute, "the summary", func() bool { return len(srv.events(t, "EventsSuppressed")) == 1 })
		if n := len(srv.events(t, "IOError")); n != 3 {
			t.Errorf("%d IOError events, want the budget's 3", n)
		}
		if got := testutil.ToFloat64(s.events.metrics.suppressed.WithLabelValues("IOError")); got != 7 {
			t.Errorf("suppressed %v, want 7", got)
		}
		if !s.EventDropped().IsZero() {
			t.Error("a budget's refusals counted as the spool dropping events")
		}
	})
}
