package finding

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes as "30s", "5m" in
// configuration files.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\" or \"5m\", got %s", b)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// ParseDuration parses a non-negative Go duration with a clear error.
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"30s\" or \"5m\"", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return v, nil
}

// EventPolicy is what a user asks of one reason's events on their way to
// the Node: whether to send them at all, how many must happen within a
// window before one is sent, and how many may be sent in an hour.
type EventPolicy struct {
	// Enabled false sends none; unset sends them.
	Enabled *bool `json:"enabled,omitempty"`
	// MinOccurrences within Window make one event, the last of them, and
	// the count starts over; 0 or 1 sends each.
	MinOccurrences int      `json:"minOccurrences,omitempty"`
	Window         Duration `json:"window,omitempty"`
	// EventsPerHour is the reason's budget, beside the node's rate limit;
	// 0 sets none.
	EventsPerHour int `json:"eventsPerHour,omitempty"`
}
