package reporter

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Snapshot is a sink that keeps every event and, through the reporter's
// state, the latest word on each condition type, for `nodeguard check`: one
// look at the node, printed the way `kubectl describe node` prints
// conditions.
type Snapshot struct {
	mu     sync.Mutex
	state  State
	events []finding.Finding
}

// NewSnapshot returns an empty snapshot.
func NewSnapshot() *Snapshot { return &Snapshot{} }

// NotProbed is the state for Reporter.Start when nothing is known of the
// node: every owned type Unknown until a check speaks of it.
func NotProbed(owned []finding.ConditionDefault) []Condition {
	var out []Condition
	for _, d := range UniqueDefaults(owned) {
		out = append(out, Condition{Finding: finding.Condition(d.Type, finding.StatusUnknown, "NotProbed", "no check reported on it in time")})
	}
	return out
}

func (s *Snapshot) Start(state State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
}

func (s *Snapshot) Event(f finding.Finding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, f)
}

// Changed keeps nothing: the reporter's state has it.
func (s *Snapshot) Changed(Condition) {}

// Result is what the snapshot saw.
type Result struct {
	Conditions []finding.Finding `json:"conditions"`
	Events     []finding.Finding `json:"events"`
}

// Result lists every owned type's state and the events in order.
func (s *Snapshot) Result() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Result
	if s.state != nil {
		for _, c := range s.state.Conditions() {
			r.Conditions = append(r.Conditions, c.Finding)
		}
	}
	r.Events = append(r.Events, s.events...)
	sort.SliceStable(r.Events, func(i, j int) bool { return r.Events[i].Time.Before(r.Events[j].Time) })
	return r
}

// Problem says whether any of nodeguard's own conditions is True (an
// aggregate one is True while healthy).
func (r Result) Problem() bool {
	for _, c := range r.Conditions {
		if c.Status == finding.StatusTrue && !finding.IsAggregate(c.Type) {
			return true
		}
	}
	return false
}

// WriteText prints the conditions as `kubectl describe node` does, then the
// events.
func (r Result) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "Conditions:")
	fmt.Fprintln(tw, "  Type\tStatus\tReason\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t------\t-------")
	for _, c := range r.Conditions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, c.Status, c.Reason, oneLineMessage(c.Message))
	}
	if len(r.Events) == 0 {
		fmt.Fprintln(tw, "Events:\t<none>")
		return tw.Flush()
	}
	fmt.Fprintln(tw, "Events:")
	fmt.Fprintln(tw, "  Time\tReason\tFrom\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t----\t-------")
	for _, e := range r.Events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), e.Reason, e.Check, oneLineMessage(e.Message))
	}
	return tw.Flush()
}

// WriteJSON prints the result as one JSON object.
func (r Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func oneLineMessage(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return Truncate(s, 200)
}
