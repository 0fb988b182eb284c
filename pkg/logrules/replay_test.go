package logrules

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func replayString(t *testing.T, log string) ([]finding.Finding, error) {
	t.Helper()
	var found []finding.Finding
	err := Replay(strings.NewReader(log), "test.log", newEngine(t, panicRule), func(f finding.Finding) { found = append(found, f) })
	return found, err
}

func TestReplayTimesAndSources(t *testing.T) {
	log := strings.Join([]string{
		"[  100.500000] some line",
		"Kernel panic - not syncing: plain line takes the time before it", // line 2
		"6,1,200000000,-;Kernel panic - not syncing: kmsg",                // line 3
		"<0>[  300.000001] Kernel panic - not syncing: dmesg",             // line 4
	}, "\n") // no newline at the end
	found, err := replayString(t, log)
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(0, 0).UTC()
	want := []struct {
		source string
		at     time.Time
	}{
		{"test.log:2", epoch.Add(100500 * time.Millisecond)},
		{"test.log:3", epoch.Add(200 * time.Second)},
		{"test.log:4", epoch.Add(300*time.Second + time.Microsecond)},
	}
	if len(found) != len(want) {
		t.Fatalf("%d findings, want %d: %+v", len(found), len(want), found)
	}
	for i, w := range want {
		if found[i].Source != w.source || !found[i].Time.Equal(w.at) {
			t.Errorf("finding %d at %s %s, want %s %s", i, found[i].Source, found[i].Time, w.source, w.at)
		}
	}
}

func TestReplayPlainFromStart(t *testing.T) {
	found, err := replayString(t, "Kernel panic - not syncing: x\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || !found[0].Time.Equal(time.Unix(0, 0)) || found[0].Message != "Kernel panic - not syncing: x" {
		t.Errorf("found %+v", found)
	}
}

func TestReplayEmpty(t *testing.T) {
	for _, log := range []string{"", "\n", "\n\n\n"} {
		found, err := replayString(t, log)
		if err != nil || len(found) != 0 {
			t.Errorf("Replay(%q) = %v, %v", log, found, err)
		}
	}
}

// TestReplayLongLine: a line longer than maxLineBytes is cut, not an error,
// and the lines after it are read.
func TestReplayLongLine(t *testing.T) {
	long := "Kernel panic - not syncing: " + strings.Repeat("x", maxLineBytes+10)
	tests := []struct {
		name string
		log  string
		want int // KernelPanic findings
	}{
		{"long line then a match", strings.Repeat("y", 3*maxLineBytes) + "\nKernel panic - not syncing: after\n", 1},
		{"long matching line", long + "\nKernel panic - not syncing: after\n", 2},
		{"long line at the end without newline", "Kernel panic - not syncing: before\n" + long, 2},
		{"line of exactly the limit", strings.Repeat("z", maxLineBytes-1) + "\nKernel panic - not syncing: after\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found, err := replayString(t, tt.log)
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if len(found) != tt.want {
				t.Fatalf("%d findings, want %d", len(found), tt.want)
			}
			for _, f := range found {
				if len(f.Message) > maxLineBytes {
					t.Errorf("message of %d bytes, longer than a line may be", len(f.Message))
				}
			}
			if last := found[len(found)-1]; tt.want > 1 && !strings.HasSuffix(last.Source, ":2") {
				t.Errorf("last finding on %s, want line 2", last.Source)
			}
		})
	}
}

// TestReplayOneByteReads: line handling does not depend on how the reader
// splits its data.
func TestReplayOneByteReads(t *testing.T) {
	log := "[ 1.0] Kernel panic - not syncing: a\n[ 2.0] x\n[ 3.0] Kernel panic - not syncing: b\n"
	var found []finding.Finding
	err := Replay(iotest.OneByteReader(strings.NewReader(log)), "one", newEngine(t, panicRule), func(f finding.Finding) { found = append(found, f) })
	if err != nil || len(found) != 2 || found[1].Source != "one:3" {
		t.Errorf("Replay = %+v, %v", found, err)
	}
}

func TestReplayReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader("[ 1.0] ok\n[ 2.0] ok\n"), iotest.ErrReader(boom))
	err := Replay(r, "bad.log", newEngine(t, panicRule), func(finding.Finding) {})
	if !errors.Is(err, boom) {
		t.Fatalf("Replay error = %v, want %v", err, boom)
	}
	if !strings.Contains(err.Error(), "bad.log") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %q does not say where", err)
	}
}
