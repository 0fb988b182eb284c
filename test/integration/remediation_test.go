package integration

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/nodeguard/nodeguard/pkg/remediation"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// fakeSystemd stands in for systemd's D-Bus unit manager.
type fakeSystemd struct {
	restarts atomic.Int32
	mu       sync.Mutex
	at       []time.Time // when each restart was asked for
}

func (f *fakeSystemd) RestartUnit(ctx context.Context, unit string) (string, error) {
	if unit != "kubelet.service" {
		return "failed", nil
	}
	f.mu.Lock()
	f.at = append(f.at, time.Now())
	f.mu.Unlock()
	f.restarts.Add(1)
	return "done", nil
}

// restartTimes returns when each restart was asked for.
func (f *fakeSystemd) restartTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...)
}

// staleCount says that many of 100 other nodes' leases are stale.
type staleCount int

func (s staleCount) OtherStaleLeases(context.Context) (int, int, error) { return int(s), 100, nil }

// runRemediation wires a check, the reporter, the node sink and the kubelet
// restarter as cmd/agent does, with systemd replaced.
func runRemediation(t *testing.T, nodeName string, check checks.Check, sd *fakeSystemd, others remediation.StaleLeaseCounter, enabled bool) {
	t.Helper()
	log := zaptest.NewLogger(t)
	client, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sink := newNodeSink(t, client, log, reg, nodeName)
	sinks := []reporter.Sink{sink}
	var restarter *remediation.KubeletRestarter
	if enabled {
		restarter = remediation.NewKubeletRestarter(remediation.RestartKubeletOptions{
			Unit: "kubelet.service", When: []string{"KubeletLeaseStale"}, After: time.Second, Cooldown: 3 * time.Second, Timeout: time.Second,
		}, sd, others, log, reg)
		sinks = append(sinks, restarter)
	}
	rep := reporter.New(log, check.Conditions(), sinks...)
	ctx := runReporter(t, log, sink, rep, check)
	if restarter != nil {
		// Cleanups run last first: this one must end the restarter itself
		// rather than wait for runReporter's to cancel ctx.
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { restarter.Run(ctx, rep.Report) })
		t.Cleanup(func() { cancel(); wg.Wait() })
	}
}

func countEvents(t *testing.T, node, reason string) int {
	t.Helper()
	n := 0
	for _, e := range listEvents(t, node, reason) {
		n += int(e.Count)
	}
	return n
}

// listEvents returns the events about a node with a reason.
func listEvents(t *testing.T, node, reason string) []corev1.Event {
	t.Helper()
	sel := fields.AndSelectors(fields.OneTermEqualSelector("involvedObject.name", node), fields.OneTermEqualSelector("reason", reason)).String()
	list, err := cluster.Client.CoreV1().Events(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestKubeletRestartOncePerCooldownNeverWhenDisabledOrClusterWide(t *testing.T) {
	needCluster(t)
	stale := finding.Condition("KubeletLeaseStale", finding.StatusTrue, "KubeletLeaseStale", "kubelet last renewed its lease long ago")
	conds := []finding.ConditionDefault{{Type: "KubeletLeaseStale", Reason: "KubeletLeaseFresh"}}

	t.Run("enabled", func(t *testing.T) {
		const name = "remediate-node"
		createNode(t, name)
		sd := &fakeSystemd{}
		check := &pushCheck{conds: conds, in: make(chan finding.Finding)}
		// Two dead nodes of a hundred are no cluster-wide problem.
		runRemediation(t, name, check, sd, staleCount(2), true)
		check.in <- stale
		waitEvent(t, name, "KubeletRestarting", "KubeletLeaseStale has held for", 15*time.Second)
		waitEvent(t, name, "KubeletRestarted", "restarted kubelet.service", 15*time.Second)
		// Still stale: a second restart, but only once the 3 s cooldown
		// is over. Asserted as a lower bound on the gap, which a slow
		// machine can only widen.
		for deadline := time.Now().Add(15 * time.Second); sd.restarts.Load() < 2; {
			if time.Now().After(deadline) {
				t.Fatalf("%d restarts 15 s into a stale lease with a 3 s cooldown, want 2", sd.restarts.Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if at := sd.restartTimes(); at[1].Sub(at[0]) < 3*time.Second {
			t.Errorf("second restart %s after the first, want no sooner than the 3 s cooldown", at[1].Sub(at[0]))
		}
		// Fresh again: no more.
		check.in <- finding.Condition("KubeletLeaseStale", finding.StatusFalse, "KubeletLeaseFresh", "ok")
		time.Sleep(4 * time.Second)
		if n := sd.restarts.Load(); n != 2 {
			t.Errorf("%d restarts after the lease was fresh again, want 2", n)
		}
	})

	t.Run("disabled", func(t *testing.T) {
		const name = "no-remediate-node"
		createNode(t, name)
		sd := &fakeSystemd{}
		check := &pushCheck{conds: conds, in: make(chan finding.Finding)}
		runRemediation(t, name, check, sd, staleCount(0), false)
		check.in <- stale
		time.Sleep(3 * time.Second)
		if n := sd.restarts.Load(); n != 0 || countEvents(t, name, "KubeletRestarting") != 0 {
			t.Errorf("disabled remediation restarted %d times", n)
		}
	})

	t.Run("other nodes stale too", func(t *testing.T) {
		const name = "refuse-node"
		createNode(t, name)
		sd := &fakeSystemd{}
		check := &pushCheck{conds: conds, in: make(chan finding.Finding)}
		runRemediation(t, name, check, sd, staleCount(20), true)
		check.in <- stale
		waitEvent(t, name, "KubeletRestartRefused", "20 of 100 other nodes' leases are stale too", 15*time.Second)
		if n := sd.restarts.Load(); n != 0 {
			t.Errorf("restarted %d times while the whole cluster's leases were stale", n)
		}
	})

	// A partition or control-plane outage: the kubelet's lease failures
	// are in its journal, and the other nodes cannot be seen either. The
	// real lease count, against the real API server, with a token it
	// refuses.
	t.Run("other nodes' leases unreadable", func(t *testing.T) {
		const name = "unsure-node"
		createNode(t, name)
		sd := &fakeSystemd{}
		check := &pushCheck{conds: conds, in: make(chan finding.Finding)}
		refused, err := kubernetes.NewForConfig(&rest.Config{Host: cluster.Config.Host, BearerToken: "not-a-token",
			TLSClientConfig: rest.TLSClientConfig{CAData: cluster.Config.TLSClientConfig.CAData}})
		if err != nil {
			t.Fatal(err)
		}
		runRemediation(t, name, check, sd, kube.StaleLeases{Client: refused, NodeName: name}, true)
		check.in <- stale
		waitEvent(t, name, "KubeletRestartRefused", "the other nodes' leases cannot be read", 15*time.Second)
		if n := sd.restarts.Load(); n != 0 {
			t.Errorf("restarted %d times without seeing the other nodes' leases", n)
		}
	})
}

func TestTaintWhileConditionHolds(t *testing.T) {
	needCluster(t)
	const name = "taint-node"
	node := createNode(t, name)
	ctx := context.Background()
	// A taint someone else put there stays.
	node, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Spec.Taints = []corev1.Taint{{Key: "example.com/maintenance", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	if _, err := cluster.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	client, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	sink := remediation.NewTaintSink(client, name, []remediation.TaintRule{{Condition: "KubeletLeaseStale", Key: "nodeguard.io/kubelet-lease-stale", Effect: corev1.TaintEffectNoSchedule}}, log)
	check := &pushCheck{conds: []finding.ConditionDefault{{Type: "KubeletLeaseStale", Reason: "KubeletLeaseFresh"}}, in: make(chan finding.Finding)}
	rep := reporter.New(log, check.Conditions(), sink)
	rep.Start(reporter.FromNode(node.Status.Conditions), time.Time{})
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { sink.Run(runCtx) })
	wg.Go(func() {
		(&checks.Supervisor{Checks: []checks.Check{check}, Emit: rep.Report, Log: log}).Run(runCtx, time.Second)
	})
	defer func() { cancel(); wg.Wait() }()

	taints := func() map[string]bool {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, t := range n.Spec.Taints {
			out[t.Key] = true
		}
		return out
	}
	waitTaints := func(want map[string]bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := taints()
			if len(got) == len(want) && got["nodeguard.io/kubelet-lease-stale"] == want["nodeguard.io/kubelet-lease-stale"] && got["example.com/maintenance"] {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("taints %v, want %v", got, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	check.in <- finding.Condition("KubeletLeaseStale", finding.StatusTrue, "KubeletLeaseStale", "stale")
	waitTaints(map[string]bool{"nodeguard.io/kubelet-lease-stale": true, "example.com/maintenance": true})
	check.in <- finding.Condition("KubeletLeaseStale", finding.StatusFalse, "KubeletLeaseFresh", "fresh")
	waitTaints(map[string]bool{"example.com/maintenance": true})
}

// TestTaintComesOffAfterARebootWithoutAFinding: a condition left True by
// the boot before a reboot is reset when the reporter starts, with no
// finding; the taint sink takes the taint off from that starting state.
func TestTaintComesOffAfterARebootWithoutAFinding(t *testing.T) {
	needCluster(t)
	const name = "reboot-taint-node"
	createNode(t, name)
	ctx := context.Background()
	node, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Spec.Taints = []corev1.Taint{{Key: "nodeguard.io/kernel-deadlock", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	if node, err = cluster.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	lastBoot := time.Now().Add(-time.Hour)
	node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{Type: "KernelDeadlock", Status: corev1.ConditionTrue,
		Reason: "ContainerRuntimeHung", LastTransitionTime: metav1.NewTime(lastBoot.Add(-time.Hour))})
	if node, err = cluster.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	client, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	sink := remediation.NewTaintSink(client, name, []remediation.TaintRule{{Condition: "KernelDeadlock", Key: "nodeguard.io/kernel-deadlock", Effect: corev1.TaintEffectNoSchedule}}, log)
	rep := reporter.New(log, []finding.ConditionDefault{finding.KernelDeadlock}, sink)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { sink.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	rep.Start(reporter.FromNode(node.Status.Conditions), lastBoot)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(n.Spec.Taints) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("taint still on the node while KernelDeadlock is reset to False: %+v", n.Spec.Taints)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
