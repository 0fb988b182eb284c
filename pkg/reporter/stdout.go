package reporter

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// WriterSink prints one line per finding: human-readable text, or JSON lines
// for scripts (the shape `nodeguard replay` prints too).
type WriterSink struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

// NewWriterSink returns a sink printing to w; format is "text" or "json".
func NewWriterSink(w io.Writer, format string) *WriterSink {
	return &WriterSink{w: w, json: format == "json"}
}

// Start prints nothing: the starting state is no finding.
func (s *WriterSink) Start(State) {}

// Event prints an event.
func (s *WriterSink) Event(f finding.Finding) { s.Finding(f) }

// Changed prints the finding that changed a condition.
func (s *WriterSink) Changed(c Condition) { s.Finding(c.Finding) }

// Finding prints one finding; `nodeguard replay` calls it for every finding
// of the rules, which no reporter has merged.
func (s *WriterSink) Finding(f finding.Finding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.json {
		b, err := json.Marshal(f)
		if err != nil {
			return
		}
		s.w.Write(append(b, '\n'))
		return
	}
	fmt.Fprintln(s.w, FormatText(f))
}

// FormatText renders a finding the way a person reads it in a terminal.
func FormatText(f finding.Finding) string {
	ts := f.Time.Format(time.RFC3339)
	switch f.Kind {
	case finding.KindCondition:
		return fmt.Sprintf("%s condition %s=%s reason=%s check=%s: %s", ts, f.Type, f.Status, f.Reason, f.Check, f.Message)
	default:
		return fmt.Sprintf("%s event %s %s check=%s: %s", ts, f.Severity, f.Reason, f.Check, f.Message)
	}
}
