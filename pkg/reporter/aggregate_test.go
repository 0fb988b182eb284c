package reporter

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// The aggregate types follow their sources in the reporter's own state:
// False naming each True source, Unknown naming the Unknown ones, True
// otherwise; sinks hear of an aggregate's change right after its source's.
func TestAggregateFollowsItsSources(t *testing.T) {
	owned := []finding.ConditionDefault{finding.KernelDeadlock, finding.FrequentUnregisterNetDevice, finding.DiskIOStuck}
	at := time.Unix(1000, 0)
	cond := func(d finding.ConditionDefault, status finding.Status, reason, msg string) finding.Finding {
		at = at.Add(time.Second)
		f := finding.Condition(d.Type, status, reason, msg)
		f.Check, f.Time = "c", at
		return f
	}
	for _, tc := range []struct {
		name    string
		report  []finding.Finding
		status  finding.Status
		reason  string
		message string
	}{
		{"healthy", nil, finding.StatusTrue, "KernelIsReady", "nodeguard's KernelDeadlock, FrequentUnregisterNetDevice are False"},
		{"one source True", []finding.Finding{cond(finding.KernelDeadlock, finding.StatusTrue, "ContainerRuntimeHung", "task containerd:42 hung")},
			finding.StatusFalse, "KernelDeadlock", "KernelDeadlock: task containerd:42 hung"},
		{"the second source True: reason is the first in the mapping's order", []finding.Finding{
			cond(finding.FrequentUnregisterNetDevice, finding.StatusTrue, "UnregisterNetDevice", "eth1 busy"),
			cond(finding.KernelDeadlock, finding.StatusTrue, "ContainerRuntimeHung", "hung"),
		}, finding.StatusFalse, "KernelDeadlock", "KernelDeadlock: hung; FrequentUnregisterNetDevice: eth1 busy"},
		{"raised and cleared", []finding.Finding{
			cond(finding.KernelDeadlock, finding.StatusTrue, "ContainerRuntimeHung", "hung"),
			cond(finding.KernelDeadlock, finding.StatusFalse, "KernelHasNoDeadlock", "gone"),
		}, finding.StatusTrue, "KernelIsReady", "are False"},
		{"Unknown source", []finding.Finding{cond(finding.FrequentUnregisterNetDevice, finding.StatusUnknown, "NotProbed", "no word")},
			finding.StatusUnknown, "FrequentUnregisterNetDevice", "FrequentUnregisterNetDevice: no word"},
		{"True beats Unknown", []finding.Finding{
			cond(finding.FrequentUnregisterNetDevice, finding.StatusUnknown, "NotProbed", "no word"),
			cond(finding.KernelDeadlock, finding.StatusTrue, "ContainerRuntimeHung", "hung"),
		}, finding.StatusFalse, "KernelDeadlock", "KernelDeadlock: hung"},
		{"another aggregate's source changes nothing here", []finding.Finding{cond(finding.DiskIOStuck, finding.StatusTrue, "DiskIOIsStuck", "sda")},
			finding.StatusTrue, "KernelIsReady", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recordSink{}
			r := New(zaptest.NewLogger(t), owned, sink)
			if err := r.PublishAggregates(finding.Aggregates()); err != nil {
				t.Fatal(err)
			}
			r.Start(nil, time.Time{})
			for _, f := range tc.report {
				r.Report(f)
			}
			c, ok := r.Condition("KernelReady")
			if !ok || c.Status != tc.status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) || c.Check != AggregateCheck {
				t.Errorf("KernelReady = %+v (published %v), want %s %s with %q from the aggregate", c, ok, tc.status, tc.reason, tc.message)
			}
			// Every change of the aggregate reached the sink, as a change of
			// any owned type does, and the last it heard is the state.
			var last *finding.Finding
			for i := range sink.got {
				if sink.got[i].Type == "KernelReady" {
					last = &sink.got[i]
				}
			}
			if changed := tc.status != finding.StatusTrue || len(tc.report) > 1; changed && (last == nil || last.Status != c.Status || last.Reason != c.Reason) {
				t.Errorf("the sink's last KernelReady = %+v, want the state %s %s", last, c.Status, c.Reason)
			}
		})
	}
}

// Only aggregates with an owned source are published, each with its owned
// sources; StorageReady here has DiskIOStuck, NetworkingReady nothing.
// Conditions lists them after the owned types.
func TestOnlyAggregatesWithAnOwnedSourceArePublished(t *testing.T) {
	owned := []finding.ConditionDefault{finding.KernelDeadlock, finding.DiskIOStuck}
	r := New(zaptest.NewLogger(t), owned, &recordSink{})
	if err := r.PublishAggregates(finding.Aggregates()); err != nil {
		t.Fatal(err)
	}
	r.Start(nil, time.Time{})
	var types []string
	for _, c := range r.Conditions() {
		types = append(types, c.Type)
	}
	if got, want := strings.Join(types, " "), "KernelDeadlock DiskIOStuck KernelReady StorageReady"; got != want {
		t.Errorf("Conditions = %s, want %s", got, want)
	}
	for _, a := range r.Aggregates() {
		if len(a.Sources) != 1 {
			t.Errorf("%s published with sources %+v, want only the owned one", a.Type, a.Sources)
		}
	}
	// A check owning an aggregate type itself would give it two states.
	mine := New(zaptest.NewLogger(t), []finding.ConditionDefault{{Type: "KernelReady"}, finding.KernelDeadlock})
	if err := mine.PublishAggregates(finding.Aggregates()); err == nil || !strings.Contains(err.Error(), "KernelReady") {
		t.Errorf("PublishAggregates with KernelReady owned by a check = %v, want an error naming it", err)
	}
}

// An agent restart keeps an aggregate's transition time when its status
// is the one found on the Node: a consumer's clock (Karpenter's toleration
// counts from lastTransitionTime) must not restart with the agent.
func TestAggregateKeepsTransitionTimeAcrossRestart(t *testing.T) {
	owned := []finding.ConditionDefault{finding.KernelDeadlock}
	was := time.Unix(500, 0)
	for _, tc := range []struct {
		name      string
		found     []Condition
		keepSince bool
	}{
		{"same status found", []Condition{
			{Finding: finding.Condition("KernelDeadlock", finding.StatusTrue, "ContainerRuntimeHung", "hung"), Since: was},
			{Finding: finding.Condition("KernelReady", finding.StatusFalse, "KernelDeadlock", "KernelDeadlock: hung"), Since: was},
		}, true},
		{"other status found", []Condition{
			{Finding: finding.Condition("KernelReady", finding.StatusFalse, "KernelDeadlock", "old"), Since: was},
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(zaptest.NewLogger(t), owned, &recordSink{})
			if err := r.PublishAggregates(finding.Aggregates()); err != nil {
				t.Fatal(err)
			}
			r.Start(tc.found, time.Unix(100, 0))
			c, _ := r.Condition("KernelReady")
			if got := c.Since.Equal(was); got != tc.keepSince {
				t.Errorf("KernelReady %s since %v, kept the found time: %v, want %v", c.Status, c.Since, got, tc.keepSince)
			}
		})
	}
}

func managed(manager, fields string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate, Subresource: "status",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
}

const kernelReadyFields = `{"f:status":{"f:conditions":{"k:{\"type\":\"KernelReady\"}":{".":{},"f:lastHeartbeatTime":{},"f:status":{},"f:type":{}}}}}`

func TestForeignWriterOfAnAggregateType(t *testing.T) {
	aggs := finding.Aggregates()
	kernelReady := func(reason string) []corev1.NodeCondition {
		msg := map[string]string{"KernelIsReady": "nodeguard's KernelDeadlock is False", "KernelDeadlock": "KernelDeadlock: hung",
			"FrequentUnregisterNetDevice": "FrequentUnregisterNetDevice: eth1"}[reason]
		return []corev1.NodeCondition{{Type: "KernelReady", Status: corev1.ConditionTrue, Reason: reason, Message: msg}}
	}
	for _, tc := range []struct {
		name    string
		fields  []metav1.ManagedFieldsEntry
		conds   []corev1.NodeCondition
		manager string // the other writer named, "" for none
		reason  string
	}{
		{"nodeguard wrote it before (a restart)", []metav1.ManagedFieldsEntry{managed(FieldManager, kernelReadyFields)}, kernelReady("KernelIsReady"), "", ""},
		{"another manager wrote it", []metav1.ManagedFieldsEntry{
			managed("kubelet", `{"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{"f:status":{}}}}}`),
			managed("eks-node-monitoring-agent", kernelReadyFields),
		}, kernelReady("KernelIsReady"), "eks-node-monitoring-agent", ""},
		{"another manager still holds part of it", []metav1.ManagedFieldsEntry{
			managed(FieldManager, kernelReadyFields),
			managed("eks-node-monitoring-agent", `{"f:status":{"f:conditions":{"k:{\"type\":\"KernelReady\"}":{".":{},"f:type":{}}}}}`),
		}, kernelReady("KernelDeadlock"), "eks-node-monitoring-agent", ""},
		{"another manager writes only the kubelet's types", []metav1.ManagedFieldsEntry{
			managed("kubelet", `{"f:status":{"f:conditions":{"k:{\"type\":\"Ready\"}":{"f:status":{}}},"f:nodeInfo":{"f:bootID":{}}}}`),
			managed("kube-controller-manager", `{"f:metadata":{"f:annotations":{"f:node.alpha.kubernetes.io/ttl":{}}}}`),
		}, nil, "", ""},
		{"no managedFields, a reason nodeguard writes", nil, kernelReady("FrequentUnregisterNetDevice"), "", ""},
		{"no managedFields, another's reason", nil, kernelReady("SoftLockup"), "", "SoftLockup"},
		{"no managedFields, nodeguard's reason in the EKS agent's words", nil, []corev1.NodeCondition{{Type: "KernelReady",
			Status: corev1.ConditionTrue, Reason: "KernelIsReady", Message: "Monitoring for the Kernel system is active"}}, "", "KernelIsReady"},
		{"no condition at all", nil, nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", ManagedFields: tc.fields}, Status: corev1.NodeStatus{Conditions: tc.conds}}
			err := ForeignWriter(node, aggs)
			var fw *ForeignWriterError
			if tc.manager == "" && tc.reason == "" {
				if err != nil {
					t.Errorf("ForeignWriter = %v, want none", err)
				}
				return
			}
			if !errors.As(err, &fw) || fw.Condition != "KernelReady" || fw.Manager != tc.manager || fw.Reason != tc.reason {
				t.Fatalf("ForeignWriter = %v, want KernelReady owned by manager %q (reason %q)", err, tc.manager, tc.reason)
			}
			for _, want := range []string{"KernelReady", "n1", tc.manager + tc.reason, "refusing to start"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
	// With no aggregates published there is nothing to refuse.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{ManagedFields: []metav1.ManagedFieldsEntry{managed("eks-node-monitoring-agent", kernelReadyFields)}}}
	if err := ForeignWriter(node, nil); err != nil {
		t.Errorf("ForeignWriter with no aggregates = %v", err)
	}
}
