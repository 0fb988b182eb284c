package reporter

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// FieldManager is the name nodeguard's status patches are recorded under
// in the Node's managedFields, set on each patch rather than left to the
// client's user agent, so that an agent can tell its own earlier writes
// from another writer's whatever client wrote them.
const FieldManager = "nodeguard"

// ForeignWriterError says that another writer owns an aggregate condition
// type on the Node: the EKS node monitoring agent writes the same types,
// and two writers of one condition would overwrite each other on every
// heartbeat, each consumer acting on whichever wrote last.
type ForeignWriterError struct {
	Node      string
	Condition string
	// Manager is the other writer's field manager, when the Node's
	// managedFields name one; else Reason is the condition's reason, in
	// words nodeguard does not write.
	Manager string
	Reason  string
}

func (e *ForeignWriterError) Error() string {
	who := fmt.Sprintf("field manager %q", e.Manager)
	if e.Manager == "" {
		who = fmt.Sprintf("a writer whose reason %q and message are not nodeguard's (the Node's managedFields name no manager for it)", e.Reason)
	}
	return fmt.Sprintf("refusing to start: condition %s on node %s is written by %s, not by nodeguard; "+
		"with reporter.aggregateConditions nodeguard must be its only writer (remove the other agent, such as the EKS node monitoring agent, "+
		"delete the condition from the Node's status, and start nodeguard again; or turn reporter.aggregateConditions off)",
		e.Condition, e.Node, who)
}

// ForeignWriter returns a *ForeignWriterError for the first aggregate type
// on node that another writer owns, or nil. The Node's managedFields say
// who wrote each condition: a manager other than nodeguard holding any
// field of the condition is another writer. A condition that no manager
// holds (a Node whose managedFields were cleared, or never tracked) is
// judged by its words instead: a reason and message nodeguard does not
// write for the type are another writer's.
func ForeignWriter(node *corev1.Node, aggs []finding.Aggregate) error {
	if len(aggs) == 0 {
		return nil
	}
	owners := conditionOwners(node.ManagedFields)
	for _, a := range aggs {
		var cond *corev1.NodeCondition
		for i := range node.Status.Conditions {
			if string(node.Status.Conditions[i].Type) == a.Type {
				cond = &node.Status.Conditions[i]
			}
		}
		for _, m := range owners[a.Type] {
			if m != FieldManager {
				return &ForeignWriterError{Node: node.Name, Condition: a.Type, Manager: m}
			}
		}
		if cond != nil && len(owners[a.Type]) == 0 && !writes(a, cond) {
			return &ForeignWriterError{Node: node.Name, Condition: a.Type, Reason: cond.Reason}
		}
	}
	return nil
}

// writes says whether cond is in the words nodeguard writes for the
// aggregate: its healthy reason with a message naming the types checked,
// or a source type's name with a message beginning with it. The reason
// alone would not do: nodeguard's healthy reasons are the EKS agent's.
func writes(a finding.Aggregate, cond *corev1.NodeCondition) bool {
	if cond.Reason == a.Reason {
		return strings.HasPrefix(cond.Message, healthyAggregatePrefix)
	}
	return slices.ContainsFunc(a.Sources, func(d finding.ConditionDefault) bool { return d.Type == cond.Reason }) &&
		strings.HasPrefix(cond.Message, cond.Reason+": ")
}

// conditionOwners maps each condition type in the managedFields to the
// managers that hold a field of it, in the order of the entries.
func conditionOwners(entries []metav1.ManagedFieldsEntry) map[string][]string {
	out := map[string][]string{}
	for _, e := range entries {
		if e.FieldsV1 == nil {
			continue
		}
		conds := fieldsAt(e.FieldsV1.Raw, "f:status", "f:conditions")
		for key := range conds {
			spec, ok := strings.CutPrefix(key, "k:")
			if !ok {
				continue
			}
			var k struct {
				Type string `json:"type"`
			}
			if json.Unmarshal([]byte(spec), &k) != nil || k.Type == "" {
				continue
			}
			if !slices.Contains(out[k.Type], e.Manager) {
				out[k.Type] = append(out[k.Type], e.Manager)
			}
		}
	}
	return out
}

// fieldsAt descends a FieldsV1 set by the path and returns the fields
// there; nil where the path does not lead.
func fieldsAt(raw []byte, path ...string) map[string]json.RawMessage {
	var fields map[string]json.RawMessage
	for _, p := range path {
		if json.Unmarshal(raw, &fields) != nil {
			return nil
		}
		raw = fields[p]
		fields = nil
	}
	if json.Unmarshal(raw, &fields) != nil {
		return nil
	}
	return fields
}
