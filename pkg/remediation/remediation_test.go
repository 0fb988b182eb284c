package remediation

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// fakeSystemd notes when each restart was asked for.
type fakeSystemd struct {
	mu sync.Mutex
	at []time.Time
}

func (f *fakeSystemd) RestartUnit(context.Context, string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = append(f.at, time.Now())
	return "done", nil
}

func (f *fakeSystemd) restarts() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.at)
}

// TestKubeletRestartCountsFromTheReporterState: the condition's time held
// comes from the reporter's state, never from before the reporter started,
// and a restart is at most once per cooldown.
func TestKubeletRestartCountsFromTheReporterState(t *testing.T) {
	stale := func(status finding.Status) finding.Finding {
		f := finding.Condition(finding.KubeletLeaseStale.Type, status, "R", string(status))
		f.Check = "lease"
		return f
	}
	type report struct {
		at time.Duration // after start
		f  finding.Finding
	}
	tests := []struct {
		name    string
		found   []reporter.Condition // on the Node at start
		reports []report
		want    []time.Duration // restarts, after start
	}{
		{
			name: "found True long ago counts from the start",
			// The bubble's clock starts in 2000.
			found: []reporter.Condition{{Finding: stale(finding.StatusTrue),
				Since: time.Date(1999, 12, 1, 0, 0, 0, 0, time.UTC)}},
			want: []time.Duration{2 * time.Minute, 32 * time.Minute},
		},
		{
			name:    "turns True after the start",
			reports: []report{{30 * time.Second, stale(finding.StatusTrue)}},
			want:    []time.Duration{150 * time.Second, 1950 * time.Second},
		},
		{
			name:    "clears before it has held long enough",
			reports: []report{{0, stale(finding.StatusTrue)}, {time.Minute, stale(finding.StatusFalse)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := zaptest.NewLogger(t)
				sd := &fakeSystemd{}
				k := NewKubeletRestarter(RestartKubeletOptions{Unit: "kubelet.service", When: []string{finding.KubeletLeaseStale.Type},
					After: 2 * time.Minute, Cooldown: 30 * time.Minute, Timeout: time.Minute}, sd, nil, log, prometheus.NewRegistry())
				rep := reporter.New(log, []finding.ConditionDefault{finding.KubeletLeaseStale}, k)
				start := time.Now()
				rep.Start(tt.found, time.Time{})
				ctx, cancel := context.WithCancel(t.Context())
				var wg sync.WaitGroup
				wg.Go(func() { k.Run(ctx, rep.Report) })
				for _, r := range tt.reports {
					time.Sleep(time.Until(start.Add(r.at)))
					f := r.f
					f.Time = time.Now()
					rep.Report(f)
				}
				time.Sleep(time.Until(start.Add(40 * time.Minute)))
				cancel()
				wg.Wait()
				var got []time.Duration
				for _, at := range sd.restarts() {
					got = append(got, at.Sub(start))
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("restarts at %v after start, want %v", got, tt.want)
				}
			})
		})
	}
}

func TestDesiredTaints(t *testing.T) {
	rule := TaintRule{Condition: "KernelDeadlock", Key: "nodeguard.io/kernel-deadlock", Effect: corev1.TaintEffectNoSchedule}
	ours := corev1.Taint{Key: rule.Key, Value: "true", Effect: rule.Effect}
	theirs := corev1.Taint{Key: "example.com/maintenance", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	tests := []struct {
		name        string
		current     []corev1.Taint
		want        map[string]bool
		wantKeys    []string
		wantChanged bool
	}{
		{"True adds ours beside theirs", []corev1.Taint{theirs}, map[string]bool{"KernelDeadlock": true}, []string{theirs.Key, ours.Key}, true},
		{"True and there already", []corev1.Taint{theirs, ours}, map[string]bool{"KernelDeadlock": true}, []string{theirs.Key, ours.Key}, false},
		{"False takes ours off", []corev1.Taint{ours, theirs}, map[string]bool{"KernelDeadlock": false}, []string{theirs.Key}, true},
		{"unknown leaves it", []corev1.Taint{ours}, map[string]bool{}, []string{ours.Key}, false},
	}
	s := &TaintSink{rules: []TaintRule{rule}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := s.desiredTaints(tt.current, tt.want)
			var keys []string
			for _, taint := range got {
				keys = append(keys, taint.Key)
			}
			if !slices.Equal(keys, tt.wantKeys) || changed != tt.wantChanged {
				t.Errorf("desiredTaints = %v (changed %v), want %v (changed %v)", keys, changed, tt.wantKeys, tt.wantChanged)
			}
		})
	}
}

// TestTaintSinkFollowsTheReporter: the taints follow the reporter's state
// from its start, and a rule for a type no check owns touches nothing.
func TestTaintSinkFollowsTheReporter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boot := time.Now().Add(-time.Hour)
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "nodeguard.io/kernel-deadlock", Value: "true", Effect: corev1.TaintEffectNoSchedule},
			{Key: "nodeguard.io/not-ours", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		}}})
		log := zaptest.NewLogger(t)
		s := NewTaintSink(client, "n1", []TaintRule{
			{Condition: "KernelDeadlock", Key: "nodeguard.io/kernel-deadlock", Effect: corev1.TaintEffectNoSchedule},
			{Condition: "NotOwned", Key: "nodeguard.io/not-ours", Effect: corev1.TaintEffectNoSchedule},
		}, log)
		rep := reporter.New(log, []finding.ConditionDefault{finding.KernelDeadlock}, s)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go s.Run(ctx)
		taints := func() []string {
			t.Helper()
			synctest.Wait()
			n, err := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, taint := range n.Spec.Taints {
				keys = append(keys, taint.Key)
			}
			slices.Sort(keys)
			return keys
		}
		// KernelDeadlock True from the boot before: reset at Start, its
		// taint comes off with no finding.
		rep.Start([]reporter.Condition{{Finding: finding.Condition("KernelDeadlock", finding.StatusTrue, "Hung", ""),
			Since: boot.Add(-time.Hour)}}, boot)
		steps := []struct {
			report *finding.Finding
			want   []string
		}{
			{nil, []string{"nodeguard.io/not-ours"}},
			{&finding.Finding{Kind: finding.KindCondition, Type: "KernelDeadlock", Status: finding.StatusTrue, Reason: "Hung"},
				[]string{"nodeguard.io/kernel-deadlock", "nodeguard.io/not-ours"}},
			{&finding.Finding{Kind: finding.KindCondition, Type: "KernelDeadlock", Status: finding.StatusFalse, Reason: "Fine"},
				[]string{"nodeguard.io/not-ours"}},
		}
		for i, step := range steps {
			if step.report != nil {
				rep.Report(*step.report)
			}
			if got := taints(); !slices.Equal(got, step.want) {
				t.Errorf("step %d: taints %v, want %v", i, got, step.want)
			}
		}
	})
}
