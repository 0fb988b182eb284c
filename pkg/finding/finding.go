// Package finding is nodeguard's vocabulary: the finding a check emits (an
// event or a condition), a condition's healthy default, the duration type of
// configuration files and the field error a bad setting gets. It is a leaf:
// it imports nothing of nodeguard, Kubernetes or the supervisor, so the rule
// engine and the configuration can use it without pulling those in.
package finding

import (
	"fmt"
	"time"
)

// Kind says whether a finding is something that happened (an event) or a
// lasting state (a condition).
type Kind string

const (
	KindEvent     Kind = "event"
	KindCondition Kind = "condition"
)

// Status is a condition's status, spelled as the Kubernetes API spells it.
type Status string

const (
	StatusTrue    Status = "True"
	StatusFalse   Status = "False"
	StatusUnknown Status = "Unknown"
)

// Severity maps onto a Kubernetes event's type.
type Severity string

const (
	SeverityInfo    Severity = "Normal"
	SeverityWarning Severity = "Warning"
)

// Finding is one result of a check. For an event, Reason and Message say what
// happened; for a condition, Type and Status say what holds now, and Reason and
// Message why.
type Finding struct {
	Kind     Kind      `json:"kind"`
	Check    string    `json:"check,omitempty"`
	Type     string    `json:"condition,omitempty"`
	Status   Status    `json:"status,omitempty"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message"`
	Severity Severity  `json:"severity,omitempty"`
	Time     time.Time `json:"time"`
	// Source names where the finding came from when that helps a reader find
	// the evidence, e.g. "/dev/kmsg seq 1234" or "kern.log:88".
	Source string `json:"line,omitempty"`
	// PodUID and ContainerID name the pod and container a finding is about
	// (an OOM kill's victim, from its memory cgroup), so that the reporter
	// can add the names the container runtime knows them by.
	PodUID      string `json:"podUID,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	// Count is how many occurrences an event stands for when it is more
	// than one: the summary of a storm of identical log lines, whose first
	// was an event of its own. Zero means one.
	Count int `json:"count,omitempty"`
	// Facts are the check's own detail behind a condition, beyond its
	// message: the probe that failed, the device and its counters, the
	// Lease's renewTime. They go into the evidence captured when the
	// condition turns True, never onto the Node, so they may change with
	// every probe without costing a write.
	Facts map[string]string `json:"facts,omitempty"`
}

// Event builds an event finding.
func Event(severity Severity, reason, message string) Finding {
	return Finding{Kind: KindEvent, Severity: severity, Reason: reason, Message: message}
}

// Condition builds a condition finding.
func Condition(conditionType string, status Status, reason, message string) Finding {
	return Finding{Kind: KindCondition, Type: conditionType, Status: status, Reason: reason, Message: message}
}

// Validate reports what is missing from a finding; the supervisor drops
// invalid findings with a log line rather than let them reach the API server.
func (f Finding) Validate() error {
	switch f.Kind {
	case KindEvent:
		if f.Reason == "" {
			return fmt.Errorf("event finding has no reason")
		}
	case KindCondition:
		if f.Type == "" {
			return fmt.Errorf("condition finding has no type")
		}
		switch f.Status {
		case StatusTrue, StatusFalse, StatusUnknown:
		default:
			return fmt.Errorf("condition %s has status %q, want True, False or Unknown", f.Type, f.Status)
		}
		if f.Reason == "" {
			return fmt.Errorf("condition %s has no reason", f.Type)
		}
	default:
		return fmt.Errorf("finding has kind %q, want event or condition", f.Kind)
	}
	return nil
}

// ConditionDefault is a condition type a check owns, with the status, reason
// and message it has while all is well. Rule files declare their condition
// types in this shape too.
type ConditionDefault struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Noisy marks a type that turns True often on a healthy fleet (a
	// flapping link), or that is about the agent rather than the node:
	// no evidence is captured when it turns True unless the evidence
	// settings name it.
	Noisy bool `json:"noisy,omitempty"`
}

// Healthy returns the condition finding for the healthy default.
func (d ConditionDefault) Healthy() Finding {
	return Condition(d.Type, StatusFalse, d.Reason, d.Message)
}
