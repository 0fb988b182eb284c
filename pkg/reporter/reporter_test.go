package reporter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// recordSink keeps what it is handed, in order.
type recordSink struct {
	state State
	got   []finding.Finding
	since []time.Time // per condition change, its Since
}

func (s *recordSink) Start(state State)       { s.state = state }
func (s *recordSink) Event(f finding.Finding) { s.got = append(s.got, f) }
func (s *recordSink) Changed(c Condition) {
	s.got = append(s.got, c.Finding)
	s.since = append(s.since, c.Since)
}

func TestReporterDropsRepeatsAndUnownedTypes(t *testing.T) {
	sink := &recordSink{}
	r := New(zaptest.NewLogger(t), []finding.ConditionDefault{{Type: "KernelDeadlock"}}, sink)
	r.Start(nil, time.Time{})
	r.Report(finding.Condition("KernelDeadlock", finding.StatusTrue, "Hung", "a"))
	r.Report(finding.Condition("KernelDeadlock", finding.StatusTrue, "Hung", "a"))  // repeat: dropped
	r.Report(finding.Condition("Ready", finding.StatusFalse, "Stolen", "not ours")) // the kubelet's: dropped
	r.Report(finding.Event(finding.SeverityWarning, "OOMKilling", "x"))
	r.Report(finding.Event(finding.SeverityWarning, "OOMKilling", "x")) // events are never deduped here
	r.Report(finding.Condition("KernelDeadlock", finding.StatusTrue, "Hung", "b"))
	var got []string
	for _, f := range sink.got {
		got = append(got, f.Reason+":"+f.Message)
	}
	want := "Hung:a OOMKilling:x OOMKilling:x Hung:b"
	if strings.Join(got, " ") != want {
		t.Errorf("sink got %v, want %s", got, want)
	}
}

// The checks run while the Node is being read (it may take an outage's
// length): what they find meanwhile reaches the sinks at Start, over the
// state found on the Node, and none of it before.
func TestFindingsBeforeStartAreAppliedAtStart(t *testing.T) {
	sink := &recordSink{}
	owned := []finding.ConditionDefault{
		{Type: "KernelDeadlock", Reason: "KernelHasNoDeadlock"},
		{Type: "DiskIOStuck", Reason: "DiskIOIsFlowing"},
		{Type: "NICDown", Reason: "NICIsUp"},
	}
	r := New(zaptest.NewLogger(t), owned, sink)
	at := time.Unix(1000, 0)
	early := func(f finding.Finding) {
		at = at.Add(time.Second)
		f.Check, f.Time = "c", at
		r.Report(f)
	}
	early(finding.Event(finding.SeverityWarning, "OOMKilling", "during the wait"))
	early(finding.Condition("DiskIOStuck", finding.StatusTrue, "DiskIOIsStuck", "first"))
	early(finding.Condition("DiskIOStuck", finding.StatusTrue, "DiskIOIsStuck", "latest"))
	early(finding.Condition("NICDown", finding.StatusFalse, "NICIsUp", "eth0 up"))
	if sink.state != nil || len(sink.got) != 0 {
		t.Fatalf("before Start the sinks got %+v (started %v), want nothing", sink.got, sink.state != nil)
	}
	// The Node held KernelDeadlock True from this boot and NICDown True:
	// the first stays, the second is overruled by what the check found.
	found := []Condition{
		{Finding: finding.Condition("KernelDeadlock", finding.StatusTrue, "ContainerRuntimeHung", "hung"), Since: time.Unix(900, 0)},
		{Finding: finding.Condition("NICDown", finding.StatusTrue, "NICIsDown", "eth0 down"), Since: time.Unix(900, 0)},
	}
	r.Start(found, time.Unix(800, 0))
	var got []string
	for _, f := range sink.got {
		got = append(got, f.Reason+":"+f.Message)
	}
	if want := "OOMKilling:during the wait DiskIOIsStuck:latest NICIsUp:eth0 up"; strings.Join(got, " ") != want {
		t.Errorf("at Start the sinks got %v, want %s", got, want)
	}
	for typ, want := range map[string]string{"KernelDeadlock": "True", "DiskIOStuck": "True", "NICDown": "False"} {
		if c, _ := r.Condition(typ); string(c.Status) != want {
			t.Errorf("%s after Start = %s, want %s", typ, c.Status, want)
		}
	}
}

func TestReporterMergesSourcesOfOneConditionType(t *testing.T) {
	sink := &recordSink{}
	owned := []finding.ConditionDefault{{Type: "ReadonlyFilesystem", Reason: "FilesystemIsNotReadOnly"}, {Type: "ReadonlyFilesystem", Reason: "MountsAreReadWrite"}}
	if got := UniqueDefaults(owned); len(got) != 1 || got[0].Reason != "FilesystemIsNotReadOnly" {
		t.Errorf("UniqueDefaults = %+v, want the first owner's default once", got)
	}
	r := New(zaptest.NewLogger(t), owned, sink)
	r.Start(nil, time.Time{})
	at := time.Unix(100, 0)
	cond := func(check string, status finding.Status, reason, msg string) finding.Finding {
		at = at.Add(time.Second)
		f := finding.Condition("ReadonlyFilesystem", status, reason, msg)
		f.Check, f.Time = check, at
		return f
	}
	r.Report(cond("disk", finding.StatusFalse, "MountsAreReadWrite", "all rw"))
	r.Report(cond("kmsg", finding.StatusTrue, "FilesystemIsReadOnly", "EXT4-fs (xvdf): Remounting filesystem read-only"))
	r.Report(cond("disk", finding.StatusFalse, "MountsAreReadWrite", "all rw")) // does not hide the kernel's word
	r.Report(cond("disk", finding.StatusTrue, "MountReadOnly", "/var/lib/kubelet is read-only"))
	var got []string
	for _, f := range sink.got {
		got = append(got, string(f.Status)+":"+f.Message)
	}
	want := []string{
		"False:all rw", // the default's reason is another: a change
		"True:EXT4-fs (xvdf): Remounting filesystem read-only",
		"True:/var/lib/kubelet is read-only; EXT4-fs (xvdf): Remounting filesystem read-only",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("merged findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestReporterStartsFromWhatItFinds: the adoption rule, applied once at
// Start, and the state's Since from then on.
func TestReporterStartsFromWhatItFinds(t *testing.T) {
	boot := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	before, after := boot.Add(-time.Hour), boot.Add(time.Hour)
	found := func(condType string, status finding.Status, reason string, since time.Time) Condition {
		return Condition{Finding: finding.Condition(condType, status, reason, "on the node"), Since: since}
	}
	var defaults []finding.ConditionDefault
	for _, ct := range []string{"KeptTrue", "StaleTrue", "KeptFalse", "Missing"} {
		defaults = append(defaults, finding.ConditionDefault{Type: ct, Reason: "Fine", Message: "fine"})
	}
	sink := &recordSink{}
	r := New(zaptest.NewLogger(t), defaults, sink)
	start := boot.Add(2 * time.Hour)
	r.now = func() time.Time { return start }
	r.Start([]Condition{
		found("Ready", finding.StatusTrue, "KubeletReady", before), // the kubelet's: not taken
		found("KeptTrue", finding.StatusTrue, "Hung", after),
		found("StaleTrue", finding.StatusTrue, "Hung", before),
		found("KeptFalse", finding.StatusFalse, "Fine", before),
	}, boot)
	tests := []struct {
		condType string
		status   finding.Status
		reason   string
		since    time.Time
	}{
		{"KeptTrue", finding.StatusTrue, "Hung", after},
		{"StaleTrue", finding.StatusFalse, "Fine", start},
		{"KeptFalse", finding.StatusFalse, "Fine", before},
		{"Missing", finding.StatusFalse, "Fine", start},
	}
	got := sink.state.Conditions()
	if len(got) != len(tests) {
		t.Fatalf("state has %d conditions, want %d: %+v", len(got), len(tests), got)
	}
	for i, tt := range tests {
		c := got[i]
		if c.Type != tt.condType || c.Status != tt.status || c.Reason != tt.reason || !c.Since.Equal(tt.since) {
			t.Errorf("state %d = %s %s/%s since %v, want %s %s/%s since %v", i, c.Type, c.Status, c.Reason, c.Since, tt.condType, tt.status, tt.reason, tt.since)
		}
	}

	// What is already so is no change; a new message is, but keeps Since;
	// a new status moves it to the finding's time.
	report := func(condType string, status finding.Status, reason, msg string, at time.Time) {
		f := finding.Condition(condType, status, reason, msg)
		f.Check, f.Time = "test", at
		r.Report(f)
	}
	report("KeptTrue", finding.StatusTrue, "Hung", "on the node", start)
	report("Missing", finding.StatusFalse, "Fine", "fine", start)
	if len(sink.got) != 0 {
		t.Errorf("findings that change nothing were passed on: %+v", sink.got)
	}
	later := start.Add(time.Minute)
	report("KeptTrue", finding.StatusTrue, "Hung", "still hung", later)
	report("KeptFalse", finding.StatusTrue, "Hung", "now hung", later)
	if want := []time.Time{after, later}; len(sink.since) != 2 || !sink.since[0].Equal(want[0]) || !sink.since[1].Equal(want[1]) {
		t.Errorf("changes' Since = %v, want %v", sink.since, want)
	}
}

// startFromNode runs s and starts rep from the Node as cmd/agent does; the
// returned stop ends s and waits for it.
func startFromNode(t *testing.T, s *NodeSink, rep *Reporter, boot time.Time) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	found, err := s.ReadConditions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep.Start(found, boot)
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestNodeSinkWritesTheAdoptedStateOnStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boot := time.Now().Add(-24 * time.Hour)
		before, after := metav1.NewTime(boot.Add(-time.Hour)), metav1.NewTime(boot.Add(time.Hour))
		defaults := []finding.ConditionDefault{
			{Type: "KeptTrue", Reason: "Fine", Message: "fine"},
			{Type: "StaleTrue", Reason: "Fine", Message: "fine"},
			{Type: "KeptFalse", Reason: "Fine", Message: "fine"},
			{Type: "Missing", Reason: "Fine", Message: "fine"},
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"},
			{Type: "KeptTrue", Status: corev1.ConditionTrue, Reason: "Hung", Message: "since this boot", LastTransitionTime: after},
			{Type: "StaleTrue", Status: corev1.ConditionTrue, Reason: "Hung", Message: "from the boot before", LastTransitionTime: before},
			{Type: "KeptFalse", Status: corev1.ConditionFalse, Reason: "Fine", Message: "fine", LastTransitionTime: before},
		}}}
		client := fake.NewClientset(node)
		log := zaptest.NewLogger(t)
		reg := prometheus.NewRegistry()
		s := newTestSink(t, client, log, reg, NodeSinkOptions{NodeName: "n1"})
		metrics := NewMetricsSink(reg)
		stop := startFromNode(t, s, New(log, defaults, s, metrics), boot)
		synctest.Wait()
		stop()
		if got := testutil.ToFloat64(s.metrics.writes.WithLabelValues("success")); got != 1 {
			t.Errorf("%v successful writes at start, want 1", got)
		}
		got, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		byType := map[string]corev1.NodeCondition{}
		for _, c := range got.Status.Conditions {
			byType[string(c.Type)] = c
		}
		tests := []struct {
			condType   string
			status     corev1.ConditionStatus
			reason     string
			transition *metav1.Time // nil: any
		}{
			{"Ready", corev1.ConditionTrue, "KubeletReady", nil},
			{"KeptTrue", corev1.ConditionTrue, "Hung", &after},
			{"StaleTrue", corev1.ConditionFalse, "Fine", nil},
			{"KeptFalse", corev1.ConditionFalse, "Fine", &before},
			{"Missing", corev1.ConditionFalse, "Fine", nil},
		}
		for _, tt := range tests {
			c, ok := byType[tt.condType]
			if !ok {
				t.Errorf("%s: missing from the node", tt.condType)
				continue
			}
			if c.Status != tt.status || c.Reason != tt.reason {
				t.Errorf("%s = %s/%s, want %s/%s", tt.condType, c.Status, c.Reason, tt.status, tt.reason)
			}
			if tt.transition != nil && !c.LastTransitionTime.Equal(tt.transition) {
				t.Errorf("%s lastTransitionTime = %v, want the API server's %v kept", tt.condType, c.LastTransitionTime, tt.transition)
			}
			if tt.condType != "Ready" && c.LastHeartbeatTime.IsZero() {
				t.Errorf("%s has no lastHeartbeatTime", tt.condType)
			}
			// The metrics show what the Node shows.
			if tt.condType != "Ready" {
				if g := testutil.ToFloat64(metrics.conditions.WithLabelValues(tt.condType, string(tt.status))); g != 1 {
					t.Errorf("nodeguard_condition{condition=%s,status=%s} = %v, want 1", tt.condType, tt.status, g)
				}
			}
		}
	})
}

func TestMetricsSink(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetricsSink(reg)
	r := New(zaptest.NewLogger(t), []finding.ConditionDefault{{Type: "KernelDeadlock", Reason: "Fine"}}, m)
	r.Start(nil, time.Time{})
	if got := testutil.ToFloat64(m.conditions.WithLabelValues("KernelDeadlock", "False")); got != 1 {
		t.Errorf("healthy default gauge = %v, want 1", got)
	}
	r.Report(finding.Condition("KernelDeadlock", finding.StatusTrue, "Hung", ""))
	r.Report(finding.Event(finding.SeverityWarning, "OOMKilling", ""))
	r.Report(finding.Event(finding.SeverityWarning, "OOMKilling", ""))
	// A storm's summary counts every line it stands for.
	storm := finding.Event(finding.SeverityWarning, "IOError", "I/O error, dev sdb, sector 8; 41 more times, identical, ...")
	storm.Count = 41
	r.Report(finding.Event(finding.SeverityWarning, "IOError", "I/O error, dev sdb, sector 8"))
	r.Report(storm)
	tests := []struct {
		metric prometheus.Collector
		want   float64
	}{
		{m.conditions.WithLabelValues("KernelDeadlock", "True"), 1},
		{m.conditions.WithLabelValues("KernelDeadlock", "False"), 0},
		{m.conditions.WithLabelValues("KernelDeadlock", "Unknown"), 0},
		{m.events.WithLabelValues("OOMKilling"), 2},
		{m.events.WithLabelValues("IOError"), 42},
		{m.diskErrors.WithLabelValues("sdb", "IOError"), 42},
	}
	for i, tt := range tests {
		if got := testutil.ToFloat64(tt.metric); got != tt.want {
			t.Errorf("metric %d = %v, want %v", i, got, tt.want)
		}
	}
}

// statusPatches counts patches of the node's status subresource.
func statusPatches(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

func TestNodeSinkCoalescesBurstsAndBeatsWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		log := zaptest.NewLogger(t)
		s := newTestSink(t, client, log, prometheus.NewRegistry(), NodeSinkOptions{
			NodeName: "n1", MinWriteInterval: 500 * time.Millisecond, Heartbeat: time.Hour,
		})
		rep := New(log, []finding.ConditionDefault{{Type: "Flappy", Reason: "Fine", Message: "fine"}}, s)
		defer startFromNode(t, s, rep, time.Time{})()
		synctest.Wait()
		if got := statusPatches(client); got != 1 {
			t.Fatalf("%d writes at start, want 1", got)
		}

		// A check flapping every 10 ms for a second: at most one write per
		// MinWriteInterval, and the last state wins.
		start := time.Now()
		for i := 0; time.Since(start) < time.Second; i++ {
			status := finding.StatusTrue
			if i%2 == 1 {
				status = finding.StatusFalse
			}
			rep.Report(finding.Finding{Kind: finding.KindCondition, Type: "Flappy", Status: status, Reason: "R", Message: strconv.Itoa(i), Time: time.Now()})
			time.Sleep(10 * time.Millisecond)
		}
		rep.Report(finding.Finding{Kind: finding.KindCondition, Type: "Flappy", Status: finding.StatusTrue, Reason: "Last", Message: "last", Time: time.Now()})
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		if err != nil || len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Reason != "Last" {
			t.Fatalf("node conditions %+v (%v), want the last state", n.Status.Conditions, err)
		}
		// 1 s of flapping at one write per 500 ms: the writes at 0.5 s and
		// 1 s (which may take the last state already), and the last one's.
		if writes := statusPatches(client) - 1; writes < 2 || writes > 3 {
			t.Errorf("%d status writes for 100 changes in 1 s, want 2 or 3", writes)
		}

		// Nothing changes: no writes until the heartbeat.
		before := statusPatches(client)
		time.Sleep(30 * time.Minute)
		if got := statusPatches(client); got != before {
			t.Errorf("%d writes while nothing changed and the heartbeat is an hour away", got-before)
		}
	})
}

func TestNodeSinkHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		log := zaptest.NewLogger(t)
		s := newTestSink(t, client, log, prometheus.NewRegistry(),
			NodeSinkOptions{NodeName: "n1", MinWriteInterval: 10 * time.Millisecond, Heartbeat: 10 * time.Second})
		stop := startFromNode(t, s, New(log, []finding.ConditionDefault{{Type: "Quiet", Reason: "Fine", Message: "fine"}}, s), time.Time{})
		time.Sleep(61 * time.Second)
		stop()
		// One write at start, then one per heartbeat, each drawn from
		// 7.5 to 10 s: 6 to 8 in 61 s.
		if got := statusPatches(client); got < 7 || got > 9 {
			t.Errorf("%d writes in 61 s with a 10 s heartbeat, want 7 to 9", got)
		}
		n, _ := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		c := n.Status.Conditions[0]
		if !c.LastHeartbeatTime.After(c.LastTransitionTime.Time) {
			t.Errorf("heartbeat %v not after transition %v: the heartbeat must move only lastHeartbeatTime", c.LastHeartbeatTime, c.LastTransitionTime)
		}
	})
}

// fakePods names the pods in it, after delay; unknown ones fail.
type fakePods struct {
	delay time.Duration
	pods  map[string][3]string // by pod UID + "/" + container ID
}

func (p fakePods) PodName(ctx context.Context, podUID, containerID string) (string, string, string, error) {
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return "", "", "", ctx.Err()
	}
	n, ok := p.pods[podUID+"/"+containerID]
	if !ok {
		return "", "", "", errors.New("unknown pod")
	}
	return n[0], n[1], n[2], nil
}

func TestEventsNameThePodAndContainer(t *testing.T) {
	oom := func(uid, cid string) finding.Finding {
		f := finding.Event(finding.SeverityWarning, "OOMKilling", "Killed process 7 (hog); pod UID "+uid)
		f.PodUID, f.ContainerID = uid, cid
		return f
	}
	for _, tt := range []struct {
		name  string
		pods  fakePods
		event finding.Finding
		want  string
		// sent is when the event reaches the API server, after it was
		// reported.
		sent time.Duration
	}{
		{
			name:  "pod and container",
			pods:  fakePods{delay: 10 * time.Millisecond, pods: map[string][3]string{"u1/c1": {"ns1", "memhog", "hog"}}},
			event: oom("u1", "c1"),
			want:  "Killed process 7 (hog); pod UID u1; pod ns1/memhog, container hog",
			sent:  10 * time.Millisecond,
		},
		{
			name:  "pod only",
			pods:  fakePods{pods: map[string][3]string{"u1/": {"ns1", "memhog", ""}}},
			event: oom("u1", ""),
			want:  "Killed process 7 (hog); pod UID u1; pod ns1/memhog",
		},
		{
			name:  "a pod the runtime does not know",
			pods:  fakePods{},
			event: oom("u2", "c2"),
			want:  "Killed process 7 (hog); pod UID u2",
		},
		{
			name:  "a runtime that does not answer in time",
			pods:  fakePods{delay: time.Hour, pods: map[string][3]string{"u1/c1": {"ns1", "memhog", "hog"}}},
			event: oom("u1", "c1"),
			want:  "Killed process 7 (hog); pod UID u1",
			sent:  podLookupDeadline,
		},
		{
			name:  "no pod: not asked",
			pods:  fakePods{delay: time.Hour},
			event: finding.Event(finding.SeverityWarning, "TaskHung", "blocked"),
			want:  "blocked",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
				log := zaptest.NewLogger(t, zaptest.Level(zap.DebugLevel))
				s := newTestSink(t, client, log, prometheus.NewRegistry(), NodeSinkOptions{NodeName: "n1", Pods: tt.pods})
				rep := New(log, nil, s)
				defer startFromNode(t, s, rep, time.Time{})()
				start := time.Now()
				rep.Report(tt.event)
				if took := time.Since(start); took != 0 {
					t.Errorf("Report held the reporter %s", took)
				}
				for {
					synctest.Wait()
					list, err := client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if len(list.Items) > 0 {
						if got := list.Items[0].Message; got != tt.want {
							t.Errorf("event message %q, want %q", got, tt.want)
						}
						if took := time.Since(start); took != tt.sent {
							t.Errorf("event sent %s after the report, want %s", took, tt.sent)
						}
						return
					}
					if time.Since(start) > time.Minute {
						t.Fatal("no event in a minute")
					}
					time.Sleep(time.Millisecond)
				}
			})
		})
	}
}

// An event waiting for its pod's name at shutdown goes out without it, at
// once.
func TestShutdownSendsEventsWaitingForTheirPod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		log := zaptest.NewLogger(t)
		s := newTestSink(t, client, log, prometheus.NewRegistry(), NodeSinkOptions{NodeName: "n1", Pods: fakePods{delay: time.Hour}})
		rep := New(log, nil, s)
		stop := startFromNode(t, s, rep, time.Time{})
		f := finding.Event(finding.SeverityWarning, "OOMKilling", "Killed process 7 (hog)")
		f.PodUID = "u1"
		rep.Report(f)
		start := time.Now()
		stop()
		if took := time.Since(start); took != 0 {
			t.Errorf("shutdown waited %s for the pod's name", took)
		}
	})
}

func TestRetryCapByAnswer(t *testing.T) {
	n := &nodeClient{maxRetry: 10 * time.Second}
	gr := schema.GroupResource{Resource: "nodes"}
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"connection refused", errors.New("dial tcp 10.0.0.1:443: connect: connection refused"), 10 * time.Second},
		{"server error", apierrors.NewInternalError(errors.New("etcd")), 10 * time.Second},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), 10 * time.Second},
		{"conflict", apierrors.NewConflict(gr, "n1", errors.New("changed")), 10 * time.Second},
		{"forbidden", apierrors.NewForbidden(gr, "n1", errors.New("admission policy")), refusedRetryInterval},
		{"not found", apierrors.NewNotFound(gr, "n1"), refusedRetryInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := n.retryCap(tt.err); got != tt.want {
				t.Errorf("retryCap(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

// TestWriteWaitingOutABackoffGoesWhenTheServerIsBack: the sink backs off
// up to MaxRetryInterval through an outage, but a request of the agent's
// that gets through (the Lease watch) ends the wait at once.
func TestWriteWaitingOutABackoffGoesWhenTheServerIsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		var (
			down     atomic.Bool
			attempts atomic.Int32
		)
		down.Store(true)
		client.PrependReactor("patch", "nodes", func(action k8stesting.Action) (bool, runtime.Object, error) {
			if down.Load() {
				attempts.Add(1)
				return true, nil, errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
			}
			return false, nil, nil
		})
		log := zaptest.NewLogger(t)
		s := newTestSink(t, client, log, prometheus.NewRegistry(),
			NodeSinkOptions{NodeName: "n1", MinWriteInterval: 10 * time.Millisecond, Heartbeat: time.Hour, MaxRetryInterval: time.Hour})
		defer startFromNode(t, s, New(log, []finding.ConditionDefault{{Type: "Quiet", Reason: "Fine", Message: "fine"}}, s), time.Time{})()
		// Eight failures: the backoff, doubling from 100 ms, now waits at
		// least 6.4 s (half of 12.8 s, the jitter's floor) before the next try.
		for attempts.Load() < 8 {
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		down.Store(false)
		s.ObserveAPI(nil)
		// The write goes as soon as MinWriteInterval allows, not 6.4 s on.
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		if err != nil || len(n.Status.Conditions) != 1 {
			t.Fatalf("conditions %+v (%v): the pending write waited out its backoff instead of going when the server answered again", n.Status.Conditions, err)
		}
	})
}

// TestNodeSinkWritesWhatIsPendingWhenItStops: a change still waiting out
// MinWriteInterval when the sink is stopped goes out before Run returns,
// so that what the checks report while the agent shuts down is not lost.
func TestNodeSinkWritesWhatIsPendingWhenItStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		log := zaptest.NewLogger(t)
		s := newTestSink(t, client, log, prometheus.NewRegistry(),
			NodeSinkOptions{NodeName: "n1", MinWriteInterval: time.Hour, Heartbeat: time.Hour})
		rep := New(log, []finding.ConditionDefault{{Type: "Late", Reason: "Fine", Message: "fine"}}, s)
		stop := startFromNode(t, s, rep, time.Time{})
		synctest.Wait()
		if got := statusPatches(client); got != 1 {
			t.Fatalf("%d writes at start, want 1", got)
		}
		rep.Report(finding.Finding{Kind: finding.KindCondition, Type: "Late", Status: finding.StatusTrue, Reason: "FoundWhileStopping", Message: "late", Time: time.Now()})
		time.Sleep(time.Minute) // into the hour-long coalescing wait
		stop()
		n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Reason != "FoundWhileStopping" {
			t.Errorf("conditions after stopping = %+v, want the pending Late=True written", n.Status.Conditions)
		}
	})
}

// TestServerErrorsKeepTheirBackoffWhileOtherRequestsSucceed: status writes
// fail with 500 (a failing webhook) while the Lease watch keeps getting
// through. The watch's successes must not restart the writes' backoff, or
// every node would retry at the Lease's pace.
func TestServerErrorsKeepTheirBackoffWhileOtherRequestsSucceed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
		var attempts atomic.Int32
		client.PrependReactor("patch", "nodes", func(action k8stesting.Action) (bool, runtime.Object, error) {
			attempts.Add(1)
			return true, nil, apierrors.NewInternalError(errors.New("admission webhook failed"))
		})
		log := zaptest.NewLogger(t)
		s := newTestSink(t, client, log, prometheus.NewRegistry(),
			NodeSinkOptions{NodeName: "n1", MinWriteInterval: 10 * time.Millisecond, Heartbeat: time.Hour})
		stop := startFromNode(t, s, New(log, []finding.ConditionDefault{{Type: "Quiet", Reason: "Fine", Message: "fine"}}, s), time.Time{})
		for start := time.Now(); time.Since(start) < 3*time.Second; {
			s.ObserveAPI(nil) // the Lease watch, getting through
			time.Sleep(100 * time.Millisecond)
		}
		stop()
		// Backing off from 100 ms, 3 s hold at most 7 tries (waits of 50,
		// 100, 200, 400, 800 and 1,600 ms at the jitter's floor) and the
		// final write on stop. Cut short at every success, it would be
		// about 30.
		if n := attempts.Load(); n > 9 {
			t.Errorf("%d status writes in 3 s of 500s while other requests succeeded, want the backoff kept (at most 9)", n)
		}
	})
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{strings.Repeat("a", 20), 10, strings.Repeat("a", 7) + "…"},
		{"bad \xff byte", 100, "bad \uFFFD byte"},
		{"ééééé", 7, "éé…"}, // never cuts a rune in half
	}
	for _, tt := range tests {
		got := Truncate(tt.in, tt.max)
		if got != tt.want || len(got) > tt.max || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestWriterSinkFormats(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f := finding.Finding{Kind: finding.KindCondition, Check: "kmsg", Type: "KernelDeadlock", Status: finding.StatusTrue,
		Reason: "ContainerRuntimeHung", Message: "task containerd blocked", Time: at, Source: "kmsg seq 7"}
	var text, js bytes.Buffer
	NewWriterSink(&text, "text").Finding(f)
	NewWriterSink(&js, "json").Finding(f)
	if want := "2026-11-23T10:00:00Z condition KernelDeadlock=True reason=ContainerRuntimeHung check=kmsg: task containerd blocked\n"; text.String() != want {
		t.Errorf("text = %q, want %q", text.String(), want)
	}
	var got map[string]any
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatalf("json line %q: %v", js.String(), err)
	}
	for k, v := range map[string]any{"kind": "condition", "condition": "KernelDeadlock", "status": "True", "reason": "ContainerRuntimeHung", "line": "kmsg seq 7"} {
		if got[k] != v {
			t.Errorf("json %s = %v, want %v", k, got[k], v)
		}
	}
}

func TestDiskErrorsCountedByDevice(t *testing.T) {
	tests := []struct{ msg, device string }{
		{"blk_update_request: I/O error, dev xvdf, sector 2048", "xvdf"},
		{"Buffer I/O error on dev dm-0, logical block 154321, lost async page write", "dm-0"},
		{"Buffer I/O error on device sdb1, logical block 244183", "sdb1"},
		{"EXT4-fs error (device xvdf): ext4_find_entry:1436: inode #2", "xvdf"},
		{"EXT4-fs warning (device nvme1n1p1): ext4_end_bio:343: I/O error 10 writing to inode 12", "nvme1n1p1"},
		{"XFS (dm-0): metadata I/O error in \"xfs_trans_read_buf_map\"", "dm-0"},
		{"nvme nvme0: I/O 512 QID 3 timeout, aborting", "nvme0"},
		{"something else", "unknown"},
	}
	for _, tt := range tests {
		if got := DiskDevice(tt.msg); got != tt.device {
			t.Errorf("DiskDevice(%q) = %q, want %q", tt.msg, got, tt.device)
		}
	}
	m := NewMetricsSink(prometheus.NewRegistry())
	m.Event(finding.Event(finding.SeverityWarning, "IOError", tests[0].msg))
	m.Event(finding.Event(finding.SeverityWarning, "OOMKilling", "Killed process 1 (dev x)"))
	if got := testutil.ToFloat64(m.diskErrors.WithLabelValues("xvdf", "IOError")); got != 1 {
		t.Errorf("nodeguard_disk_errors_total{device=xvdf,reason=IOError} = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.diskErrors); got != 1 {
		t.Errorf("%d disk error series, want 1: OOMKilling is no disk error", got)
	}
}

func TestReachabilityReportsEachOutageOnceItEnds(t *testing.T) {
	type ev struct{ reason, msg string }
	var got []ev
	r := newReachability(zaptest.NewLogger(t), prometheus.NewRegistry(), func(_, reason, msg string) { got = append(got, ev{reason, msg}) })
	clock := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, "n1")
	throttled := apierrors.NewTooManyRequests("the server is busy", 1)
	refused := errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	r.observe(nil)
	for _, answered := range []error{notFound, throttled} {
		r.observe(answered) // the server answered: not an outage
		if testutil.ToFloat64(r.up) != 1 {
			t.Errorf("%v counted as the server being unreachable", answered)
		}
	}

	// A blip shorter than minOutageEvent: logged and counted, no event.
	r.observe(refused)
	clock = clock.Add(minOutageEvent / 2)
	r.observe(nil)
	if len(got) != 0 || testutil.ToFloat64(r.outages) != 1 {
		t.Errorf("after a %s blip: events %v, outages %v; want none and 1", minOutageEvent/2, got, testutil.ToFloat64(r.outages))
	}

	r.observe(refused)
	clock = clock.Add(time.Minute)
	r.observe(apierrors.NewServiceUnavailable("etcd is gone"))
	if testutil.ToFloat64(r.up) != 0 || len(got) != 0 {
		t.Errorf("during the outage: reachable=%v, events %v; want 0 and none yet", testutil.ToFloat64(r.up), got)
	}
	r.observe(nil)
	r.observe(nil)
	if len(got) != 1 || got[0].reason != "APIServerUnreachable" || !strings.Contains(got[0].msg, "etcd is gone") || !strings.Contains(got[0].msg, "for 1m0s") {
		t.Errorf("after the outage: %v, want one APIServerUnreachable event naming the last error and lasting 1m0s", got)
	}
	if testutil.ToFloat64(r.outages) != 2 || testutil.ToFloat64(r.up) != 1 {
		t.Errorf("outages %v, reachable %v; want 2 and 1", testutil.ToFloat64(r.outages), testutil.ToFloat64(r.up))
	}

	// A request into a black hole fails at its deadline; the outage began
	// when it was sent: 20 s waiting plus 15 s after is an outage of 35 s.
	sent := clock
	clock = clock.Add(20 * time.Second)
	r.observeSent(sent, context.DeadlineExceeded)
	clock = clock.Add(15 * time.Second)
	r.observe(nil)
	if len(got) != 2 || !strings.Contains(got[1].msg, "for 35s") {
		t.Errorf("after a black hole: %v, want a second event lasting 35s", got)
	}
}

func TestHeartbeatJitterStaysWithinTheLastQuarterAndSpreads(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 5 * time.Minute} {
		lo, hi := d, time.Duration(0)
		for range 1000 {
			got := heartbeatJitter(d)
			if got < d-d/4 || got > d {
				t.Fatalf("heartbeatJitter(%s) = %s, outside [%s, %s]", d, got, d-d/4, d)
			}
			lo, hi = min(lo, got), max(hi, got)
		}
		// 1,000 uniform draws cover most of the quarter.
		if hi-lo < d/5 {
			t.Errorf("heartbeatJitter(%s) spread only over [%s, %s]", d, lo, hi)
		}
	}
}

// newTestSink makes a node sink, filling the settings a test leaves zero
// with the values a node gets by default (config.Default's).
func newTestSink(t *testing.T, client kube.Client, log *zap.Logger, reg prometheus.Registerer, opts NodeSinkOptions) *NodeSink {
	t.Helper()
	d := config.Default(nil).Reporter
	if opts.MinWriteInterval == 0 {
		opts.MinWriteInterval = d.MinWriteInterval.Duration
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = d.Heartbeat.Duration
	}
	if opts.EventQPS == 0 {
		opts.EventQPS = float32(d.EventQPS)
	}
	if opts.EventBurst == 0 {
		opts.EventBurst = d.EventBurst
	}
	if opts.SpoolSize == 0 {
		opts.SpoolSize = d.EventSpoolSize
	}
	s, err := NewNodeSink(client, log, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
