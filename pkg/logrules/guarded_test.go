package logrules

import (
	"sync"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// TestGuardedEndsQuietReports: a live report that prints no end marker goes
// out ReportQuiet after its last line, to late, and one still open when the
// source stops goes out at Stop.
func TestGuardedEndsQuietReports(t *testing.T) {
	tests := []struct {
		name string
		stop bool // stop before the quiet period is over
	}{
		{name: "quiet", stop: false},
		{name: "stopped", stop: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEngine(reportRules()[:1], nil)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var late, atStop []finding.Finding
			got := make(chan struct{}, 1)
			g := NewGuarded(e, func(f finding.Finding) {
				mu.Lock()
				late = append(late, f)
				mu.Unlock()
				got <- struct{}{}
			})
			now := time.Now()
			emitNow := func(f finding.Finding) { t.Errorf("finding %+v went out before its report ended", f) }
			g.Feed(Line{Text: "widget jam on bus 9", Time: now}, "src:1", emitNow)
			g.Feed(Line{Text: "serial=Q7", Time: now}, "src:2", emitNow)
			if tt.stop {
				g.Stop(func(f finding.Finding) { atStop = append(atStop, f) })
			} else {
				select {
				case <-got:
				case <-time.After(ReportQuiet + 5*time.Second):
					t.Fatal("the quiet report never went out")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			want, other := late, atStop
			if tt.stop {
				want, other = atStop, late
			}
			if len(want) != 1 || want[0].Message != "widget jam on bus 9; widget Q7" || want[0].Source != "src:1" || len(other) != 0 {
				t.Errorf("late %+v, at stop %+v; want the one report, from src:1, %s", late, atStop, map[bool]string{true: "at Stop", false: "late"}[tt.stop])
			}
		})
	}
}
