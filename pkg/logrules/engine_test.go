package logrules

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// The engine's tests bring small rule sets of their own: what they test is
// how the engine treats a rule's fields, not what the built-in kernel rules
// (pkg/logrules/kernelrules, tested there) match.

// testConditions are declared types with the catalog's healthy defaults, so
// that a cleared condition can be compared with a known reason and message.
var testConditions = []finding.ConditionDefault{finding.KernelDeadlock, finding.ReadonlyFilesystem, finding.FrequentUnregisterNetDevice}

func event(name, reason, contains, pattern string) Rule {
	return Rule{Name: name, Source: "kmsg", Kind: finding.KindEvent, Reason: reason, Contains: contains, Pattern: pattern}
}

func inGroup(group string, r Rule) Rule {
	r.Group = group
	return r
}

// panicRule reports a kernel panic; the closing line of the panic's report
// repeats its text and is left out.
var panicRule = Rule{Name: "panic", Kind: finding.KindEvent, Reason: "KernelPanic",
	Contains: "Kernel panic - not syncing", Pattern: `Kernel panic - not syncing`, Exclude: `---\[ end`}

func newEngine(t testing.TB, rules ...Rule) *Engine {
	t.Helper()
	e, err := NewEngine(rules, testConditions)
	if err != nil {
		t.Fatalf("test rules do not compile: %v", err)
	}
	return e
}

func TestFindingFields(t *testing.T) {
	e := newEngine(t, panicRule, Rule{Name: "ro", Kind: finding.KindCondition, Condition: "ReadonlyFilesystem",
		Reason: "FilesystemIsReadOnly", Contains: "read-only", Pattern: `Remounting filesystem read-only`})
	at := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	prior := finding.Finding{Kind: finding.KindEvent, Reason: "Prior"}
	out := e.Feed(Line{Text: "  Kernel panic - not syncing: Fatal exception  ", Time: at, Source: "kmsg seq 9"}, []finding.Finding{prior})
	if len(out) != 2 || !reflect.DeepEqual(out[0], prior) {
		t.Fatalf("Feed must append to out: got %+v", out)
	}
	ev := out[1]
	want := finding.Finding{Kind: finding.KindEvent, Reason: "KernelPanic", Message: "Kernel panic - not syncing: Fatal exception",
		Severity: finding.SeverityWarning, Time: at, Source: "kmsg seq 9"}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("event finding\n got %+v\nwant %+v", ev, want)
	}
	out = e.Feed(Line{Text: "EXT4-fs (dm-1): Remounting filesystem read-only", Time: at}, nil)
	if len(out) != 1 {
		t.Fatalf("%d findings, want 1", len(out))
	}
	cond := out[0]
	if cond.Kind != finding.KindCondition || cond.Type != "ReadonlyFilesystem" || cond.Status != finding.StatusTrue ||
		cond.Reason != "FilesystemIsReadOnly" || cond.Severity != "" || !cond.Time.Equal(at) {
		t.Errorf("condition finding %+v", cond)
	}
}

func TestConditions(t *testing.T) {
	got := newEngine(t).Conditions()
	specs := testConditions
	if len(got) != len(specs) {
		t.Fatalf("%d conditions, want %d", len(got), len(specs))
	}
	for i, c := range specs {
		if got[i].Type != c.Type || got[i].Reason != c.Reason || got[i].Message != c.Message {
			t.Errorf("condition %d = %+v, want %+v", i, got[i], c)
		}
		if h := got[i].Healthy(); h.Status != finding.StatusFalse || h.Validate() != nil {
			t.Errorf("healthy %s is %+v", c.Type, h)
		}
	}
}

func TestGrouping(t *testing.T) {
	t0 := time.Unix(10_000, 0)
	const (
		nullDeref = "BUG: kernel NULL pointer dereference, address: 0000000000000008"
		oops      = "Oops: 0002 [#1] PREEMPT SMP NOPTI"
		gpf       = "general protection fault: 0000 [#2] SMP"
		endTrace  = "---[ end trace 5ba4d4d1c1e2f3a4 ]---"
		lockup    = "watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [kworker/0:1:123]"
		benign    = "RIP: 0010:nft_set_elem_destroy+0x1c/0x50 [nf_tables]"
	)
	type at struct {
		d    time.Duration
		line string
	}
	tests := []struct {
		name  string
		lines []at
		want  []string
	}{
		{"one report is one finding", []at{{0, nullDeref}, {time.Millisecond, benign}, {2 * time.Millisecond, oops}, {3 * time.Millisecond, endTrace}},
			[]string{"KernelOops"}},
		{"two rules on one line are one finding", []at{{0, "Oops: general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] SMP"}},
			[]string{"KernelOops"}},
		{"reports more than GroupWindow apart", []at{{0, nullDeref}, {GroupWindow + time.Second, gpf}},
			[]string{"KernelOops", "KernelOops"}},
		{"reports exactly GroupWindow apart", []at{{0, nullDeref}, {GroupWindow, gpf}},
			[]string{"KernelOops", "KernelOops"}},
		{"just inside GroupWindow", []at{{0, nullDeref}, {GroupWindow - time.Nanosecond, gpf}},
			[]string{"KernelOops"}},
		{"end of report ends the group", []at{{0, nullDeref}, {time.Millisecond, endTrace}, {2 * time.Millisecond, gpf}},
			[]string{"KernelOops", "KernelOops"}},
		{"end of a panic ends the group", []at{{0, oops}, {time.Millisecond, "---[ end Kernel panic - not syncing: Fatal exception ]---"}, {2 * time.Millisecond, gpf}},
			[]string{"KernelOops", "KernelOops"}},
		{"the window runs from the last match", []at{{0, oops}, {6 * time.Second, oops}, {12 * time.Second, oops}},
			[]string{"KernelOops"}},
		{"groups are separate", []at{{0, nullDeref}, {time.Millisecond, lockup}, {2 * time.Millisecond, oops}},
			[]string{"KernelOops", "SoftLockup"}},
		{"log time going back starts a report", []at{{time.Second, oops}, {0, oops}},
			[]string{"KernelOops", "KernelOops"}},
		{"ungrouped rules are not folded", []at{{0, "Kernel panic - not syncing: Fatal exception"}, {time.Millisecond, "Kernel panic - not syncing: Attempted to kill init!"}},
			[]string{"KernelPanic", "KernelPanic"}},
	}
	rules := []Rule{
		inGroup("oops", event("null-deref", "KernelOops", "NULL pointer", `BUG: kernel NULL pointer dereference`)),
		inGroup("oops", event("oops", "KernelOops", "Oops", `Oops: `)),
		inGroup("oops", event("gpf", "KernelOops", "protection fault", `general protection fault`)),
		inGroup("lockup", event("soft-lockup", "SoftLockup", "soft lockup", `soft lockup - CPU#\d+`)),
		panicRule,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, rules...)
			var out []finding.Finding
			for _, l := range tt.lines {
				out = e.Feed(Line{Text: l.line, Time: t0.Add(l.d)}, out)
			}
			// Every rule here makes events.
			var got []string
			for _, f := range out {
				got = append(got, f.Reason)
			}
			if slices.Sort(got); !slices.Equal(got, tt.want) {
				t.Errorf("found %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMinCount(t *testing.T) {
	const line = "unregister_netdevice: waiting for eth0 to become free. Usage count = 1"
	t0 := time.Unix(50_000, 0)
	tests := []struct {
		name    string
		offsets []time.Duration
		want    int // FrequentUnregisterNetDevice=True findings
	}{
		{"two are not enough", []time.Duration{0, time.Minute}, 0},
		{"three within the window", []time.Duration{0, time.Minute, 2 * time.Minute}, 1},
		{"three spread wider than the window", []time.Duration{0, 6 * time.Minute, 12 * time.Minute}, 0},
		{"exactly the window apart does not count", []time.Duration{0, 5 * time.Minute, 10 * time.Minute}, 0},
		{"the count starts over after firing", []time.Duration{0, 1, 2, 3, 4}, 1},
		{"six in a burst fire twice", []time.Duration{0, 1, 2, 3, 4, 5}, 2},
		{"old matches fall out of the window", []time.Duration{0, 9 * time.Minute, 11 * time.Minute, 12 * time.Minute}, 1},
	}
	// Every leak is an event; three within ten minutes are frequent.
	frequent := Rule{Name: "frequent", Kind: finding.KindCondition, Condition: "FrequentUnregisterNetDevice", Reason: "UnregisterNetDevice",
		Contains: "unregister_netdevice", Pattern: `waiting for \S+ to become free`, MinCount: 3, Window: finding.Duration{Duration: 10 * time.Minute}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, event("leak", "UnregisterNetDevice", "unregister_netdevice", `waiting for \S+ to become free`), frequent)
			var out []finding.Finding
			for _, d := range tt.offsets {
				out = e.Feed(Line{Text: line, Time: t0.Add(d)}, out)
			}
			// The identical lines are storms: every line counts, in an
			// event of its own or in a storm's summary.
			out = e.Flush(out)
			var events, conds int
			for _, f := range out {
				switch {
				case f.Reason == "UnregisterNetDevice" && f.Kind == finding.KindEvent:
					events += max(f.Count, 1)
				case f.Type == "FrequentUnregisterNetDevice" && f.Status == finding.StatusTrue:
					conds++
				}
			}
			if events != len(tt.offsets) {
				t.Errorf("UnregisterNetDevice events stand for %d lines, want every line (%d)", events, len(tt.offsets))
			}
			if conds != tt.want {
				t.Errorf("%d FrequentUnregisterNetDevice=True, want %d", conds, tt.want)
			}
		})
	}
}

func TestExpire(t *testing.T) {
	clearAfter := 5 * time.Minute
	rules := []Rule{
		{Name: "clears", Kind: finding.KindCondition, Condition: "KernelDeadlock", Reason: "Hung",
			Contains: "stuck", Pattern: "stuck", ClearAfter: finding.Duration{Duration: clearAfter}},
		{Name: "stays", Kind: finding.KindCondition, Condition: "ReadonlyFilesystem", Reason: "RO",
			Contains: "read-only", Pattern: "read-only"},
	}
	t0 := time.Unix(1_000_000, 0)

	t.Run("goes False after the quiet period and not before", func(t *testing.T) {
		e := newEngine(t, rules...)
		if got := e.Feed(Line{Text: "runtime stuck", Time: t0}, nil); len(got) != 1 || got[0].Status != finding.StatusTrue {
			t.Fatalf("match gave %+v, want one True", got)
		}
		if got := e.Expire(t0.Add(clearAfter-time.Nanosecond), nil); len(got) != 0 {
			t.Fatalf("expired early: %+v", got)
		}
		got := e.Expire(t0.Add(clearAfter), nil)
		if len(got) != 1 {
			t.Fatalf("Expire at the quiet period gave %+v, want one finding", got)
		}
		f := got[0]
		if f.Kind != finding.KindCondition || f.Type != "KernelDeadlock" || f.Status != finding.StatusFalse ||
			f.Reason != "KernelHasNoDeadlock" || !f.Time.Equal(t0.Add(clearAfter)) || !strings.Contains(f.Message, "kernel has no deadlock") {
			t.Errorf("expired finding %+v", f)
		}
		if err := f.Validate(); err != nil {
			t.Error(err)
		}
		if got := e.Expire(t0.Add(time.Hour), nil); len(got) != 0 {
			t.Errorf("expired twice: %+v", got)
		}
	})
	t.Run("a new match restarts the quiet period", func(t *testing.T) {
		e := newEngine(t, rules...)
		e.Feed(Line{Text: "runtime stuck", Time: t0}, nil)
		e.Feed(Line{Text: "runtime stuck", Time: t0.Add(4 * time.Minute)}, nil)
		if got := e.Expire(t0.Add(clearAfter), nil); len(got) != 0 {
			t.Fatalf("expired though matched 1m ago: %+v", got)
		}
		if got := e.Expire(t0.Add(4*time.Minute+clearAfter), nil); len(got) != 1 {
			t.Fatalf("did not expire after a quiet period: %+v", got)
		}
	})
	t.Run("a condition without clearAfter stays", func(t *testing.T) {
		e := newEngine(t, rules...)
		e.Feed(Line{Text: "remounted read-only", Time: t0}, nil)
		if got := e.Expire(t0.Add(1000*time.Hour), nil); len(got) != 0 {
			t.Errorf("expired: %+v", got)
		}
	})
	t.Run("nothing matched, nothing expires", func(t *testing.T) {
		if got := newEngine(t, rules...).Expire(t0, nil); len(got) != 0 {
			t.Errorf("expired: %+v", got)
		}
	})
	t.Run("Expire appends", func(t *testing.T) {
		e := newEngine(t, rules...)
		e.Feed(Line{Text: "stuck", Time: t0}, nil)
		prior := []finding.Finding{{Kind: finding.KindEvent, Reason: "Prior"}}
		if got := e.Expire(t0.Add(clearAfter), prior); len(got) != 2 || got[0].Reason != "Prior" {
			t.Errorf("Expire = %+v", got)
		}
	})
}
