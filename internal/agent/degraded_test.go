package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestDegradedVerdict(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name    string
		down    []string
		dropped time.Time
		noSpool bool
		want    finding.Status
		says    []string
	}{
		{name: "all well", want: finding.StatusFalse},
		{name: "standalone, no spool", noSpool: true, want: finding.StatusFalse},
		{name: "a check down", down: []string{"kmsg (not running since 11:55)"}, want: finding.StatusTrue, says: []string{"kmsg"}},
		{name: "events dropped a minute ago", dropped: now.Add(-time.Minute), want: finding.StatusTrue, says: []string{"spool was full"}},
		{name: "events dropped long ago", dropped: now.Add(-dropWindow - time.Second), want: finding.StatusFalse},
		{name: "both", down: []string{"journald (x)"}, dropped: now, want: finding.StatusTrue, says: []string{"journald", "spool was full"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := &degradedCheck{down: func() []string { return tt.down }, now: func() time.Time { return now }}
			if !tt.noSpool {
				d.dropped = func() time.Time { return tt.dropped }
			}
			f := d.verdict()
			if f.Type != finding.Degraded.Type || f.Status != tt.want {
				t.Fatalf("verdict %s=%s (%s), want %s", f.Type, f.Status, f.Message, tt.want)
			}
			for _, s := range tt.says {
				if !strings.Contains(f.Message, s) {
					t.Errorf("message %q does not say %q", f.Message, s)
				}
			}
		})
	}
}
