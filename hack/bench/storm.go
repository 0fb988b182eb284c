package main

// The recovery storm (issue #17 part 5, issue #14 scenario 3): the API
// server stops for -scale-outage and comes back. Meanwhile every simulated
// agent's state changes, so on the return every one has a status write to
// make, an APIServerUnreachable event to send and a Lease watch to open
// again, all at once. A simulated kubelet on each node renews its Lease as
// the real one does, and each agent runs nodeguard's real lease check on
// its real Lease watch, through its reporter: a check that called a
// healthy kubelet stale after the outage would do so on every node of the
// cluster together.
//
// Not simulated: the kubelet's other requests (its Node GET every 10 s and
// status PATCH every 5 minutes, its pod watch), which a real cluster adds
// to the storm in API Priority and Fairness's system level, and the Node
// GET the kubelet's first renewal makes to set the Lease's owner.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/util/connrotation"

	"github.com/nodeguard/nodeguard/internal/testcluster"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/lease"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// The kubelet's lease controller as it ships (k8s.io/component-helpers,
// apimachinery/lease, and cmd/kubelet for its client): a sync every renew
// interval, counted from the end of the last, jittered by up to 4 %; a
// sync tries the update five times at once, and when all five fail it
// reads the Lease with a backoff from 200 ms doubling to 7 s, for as long
// as the read fails, before it updates again. Its client has no rate
// limit and a timeout of the node status update frequency (10 s).
const (
	kubeletRenewInterval    = 10 * time.Second
	kubeletRenewJitter      = 0.04
	kubeletUpdateRetries    = 5
	kubeletEnsureBackoffMax = 7 * time.Second
	kubeletRequestTimeout   = 10 * time.Second
	kubeletLeaseSeconds     = 40
)

// stormWatch is how long after the server's return the storm is watched
// for a false stale verdict, at the least: the lease check's threshold
// (20 s for the default Lease) counts from when each agent's view is
// current again, and this leaves four thresholds for a kubelet's renewal
// to be late and the check's confirming read to see it.
const stormWatch = 90 * time.Second

// stormState is the storm's shared clock: when the API server was spawned
// again and when it was ready, in Unix nanoseconds, zero before.
type stormState struct {
	spawned, back atomic.Int64
}

// storm runs the recovery storm over the running agents and prints its
// figures.
func storm(ctx context.Context, c *testcluster.Cluster, admin kubernetes.Interface, tr *tracker, agents []*simNode,
	names []string, cfg *config.Config, pr processes, errs *klogErrors) error {
	n := len(agents)
	outage := *scaleOutage
	nLease := *scaleStormLease
	if nLease <= 0 || nLease > n {
		nLease = n
	}
	out("scale_storm_outage_seconds", "%.0f", outage.Seconds())
	out("scale_storm_lease_nodes", "%d", nLease)
	if nLease < n {
		out("scale_storm_lease_note", "%q", fmt.Sprintf("simulated kubelets and the lease check on %d of the %d nodes (-scale-storm-lease-nodes)", nLease, n))
	}
	leaseCfg, ok := cfg.CheckConfigs[lease.Name].(*lease.Config)
	if !ok {
		return fmt.Errorf("the default config has no %s check", lease.Name)
	}
	threshold := leaseCfg.Threshold.Duration
	if threshold == 0 {
		d := int32(kubeletLeaseSeconds)
		threshold = finding.LeaseStaleAfter(&d)
	}
	out("scale_storm_lease_threshold_seconds", "%.0f", threshold.Seconds())

	// The kubelets, each with its node's identity and its own connection.
	st := &stormState{}
	kctx, stopKubelets := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	defer func() { stopKubelets(); kwg.Wait() }()
	kubelets := make([]*simKubelet, nLease)
	t0 := time.Now()
	for i := range kubelets {
		k, err := newSimKubelet(c, names[i], st)
		if err != nil {
			return err
		}
		kubelets[i] = k
		kwg.Add(1)
		go func() {
			defer kwg.Done()
			// Kubelets start at different times: each gets its own phase
			// in the renew interval.
			select {
			case <-kctx.Done():
				return
			case <-time.After(rand.N(kubeletRenewInterval)):
			}
			wait.JitterUntilWithContext(kctx, k.sync, kubeletRenewInterval, kubeletRenewJitter, true)
		}()
	}
	for _, k := range kubelets {
		select {
		case <-k.firstRenewal:
		case <-time.After(phaseTimeout):
			return fmt.Errorf("storm: the simulated kubelet of %s has not renewed its Lease in %s", k.name, phaseTimeout)
		}
	}
	out("scale_storm_kubelets_renewing_seconds", "%.1f", time.Since(t0).Seconds())

	// The lease checks, now that every Lease is fresh: each as the agent
	// runs it, confirming a stale verdict with a read, its findings
	// through the agent's reporter.
	lctx, stopChecks := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	defer func() { stopChecks(); lwg.Wait() }()
	verdicts := make([]leaseVerdicts, nLease)
	for i := range nLease {
		a := agents[i]
		a.leases.Confirm = a.confirm
		check := lease.New(leaseCfg, checks.Env{Log: zap.NewNop(), NodeName: names[i], Lease: a.leases, Now: time.Now})
		v := &verdicts[i]
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			check.Run(lctx, func(f finding.Finding) {
				f.Check = lease.Name
				if f.Time.IsZero() {
					f.Time = time.Now()
				}
				if f.Type == finding.KubeletLeaseStale.Type && f.Status == finding.StatusTrue {
					v.record(f)
				}
				a.rep.Report(f)
			})
		}()
	}

	// A warm-up longer than the threshold, so that a check that calls a
	// renewing kubelet stale without any outage shows it here, apart.
	takeGaps(kubelets, threshold)
	kw0 := sumKubelets(kubelets)
	w0, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu0 := pr.usage()
	time.Sleep(2*threshold + 5*time.Second)
	w1, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu1 := pr.usage()
	span := w1.at.Sub(w0.at).Seconds()
	wr := w1.requests(w0)
	out("scale_storm_warmup_seconds", "%.0f", span)
	out("scale_storm_warmup_lease_updates_per_second", "%.1f", wr.kinds["PUT leases"]/span)
	out("scale_storm_warmup_requests_per_second", "%.1f", wr.total/span)
	out("scale_storm_warmup_lease_update_p99_ms", "%.1f", w1.latencyP99(w0, leaseUpdate)*1000)
	printCores("storm_warmup", cpu0, cpu1, span)
	kw1 := sumKubelets(kubelets)
	out("scale_storm_warmup_kubelet_failed_updates", "%d", kw1.updateFailures-kw0.updateFailures)
	longest, over := takeGaps(kubelets, threshold)
	out("scale_storm_warmup_kubelet_longest_gap_ms", "%.0f", longest.Seconds()*1000)
	out("scale_storm_warmup_kubelets_late", "%d", over)
	out("scale_storm_lease_stale_before_outage", "%d", countStale(verdicts, time.Now()))
	if first := firstStale(verdicts); first != "" {
		out("scale_storm_lease_stale_before_outage_first", "%q", first)
	}

	// The outage. A graceful stop, as a control-plane upgrade does: the
	// server drains first, refusing new requests (the kubelets' renewals)
	// while open watches stay up and quiet.
	sinkErr0, errs0, outages0 := sinkErrors(agents), errs.count(), agentCounter(agents, "nodeguard_apiserver_outages_total", "", "")
	evErr0 := agentCounter(agents, "nodeguard_event_writes_total", "result", "error")
	k0 := sumKubelets(kubelets)
	marker := fmt.Sprintf("scale-storm-%d", rand.Uint32())
	stopAt := time.Now()
	if err := c.StopAPIServer(); err != nil {
		return fmt.Errorf("storm: stopping the API server: %w", err)
	}
	out("scale_storm_drain_seconds", "%.1f", time.Since(stopAt).Seconds())
	// A quarter into the outage every node's state changes: the runtime
	// that hung in the burst recovers, which the Node must come to say.
	time.Sleep(time.Until(stopAt.Add(outage / 4)))
	tr.startStorm(marker)
	msg := "the container runtime answers again " + marker
	for _, a := range agents {
		now := time.Now()
		for _, f := range []finding.Finding{
			finding.Condition(finding.KernelDeadlock.Type, finding.StatusFalse, finding.KernelDeadlock.Reason, msg),
			finding.Condition(finding.ContainerRuntimeUnresponsive.Type, finding.StatusFalse, finding.ContainerRuntimeUnresponsive.Reason, msg),
		} {
			f.Check, f.Time = "kmsg", now
			a.rep.Report(f)
		}
	}
	time.Sleep(time.Until(stopAt.Add(outage)))
	// What the outage itself cost the agents and kubelets, counted before
	// the server is back; the same counters after it are the return's.
	sinkErr1, errs1, evErr1 := sinkErrors(agents), errs.count(), agentCounter(agents, "nodeguard_event_writes_total", "result", "error")
	k1 := sumKubelets(kubelets)
	spawned := time.Now()
	st.spawned.Store(spawned.UnixNano())
	// The views' poll starts with the spawn: a server answers some
	// requests before it is ready.
	views := newViewPoll(agents[:nLease], threshold, spawned)
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	pollDone := make(chan struct{})
	go func() { defer close(pollDone); views.run(pollCtx) }()
	if err := c.StartAPIServerWithin(phaseTimeout); err != nil {
		return fmt.Errorf("storm: starting the API server again: %w", err)
	}
	back := time.Now()
	st.back.Store(back.UnixNano())
	out("scale_storm_apiserver_start_seconds", "%.1f", back.Sub(spawned).Seconds())
	apiPid := childPid("kube-apiserver")
	pr2 := processes{api: apiPid, etcd: pr.etcd}
	cpuBack := pr2.usage()

	timedOut := false
	select {
	case <-tr.stormDone:
	case <-time.After(phaseTimeout):
		timedOut = true
	}
	allSynced := time.Since(back)
	// Watch on for a late false verdict, and for the kubelets' first
	// renewals after the return.
	time.Sleep(time.Until(back.Add(stormWatch)))
	for _, k := range kubelets {
		k.renewedAfterBack(time.Until(back.Add(stormWatch + phaseTimeout)))
	}
	stopPoll()
	<-pollDone
	end, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpuEnd := pr2.usage()

	stateMs, beforeReady := tr.stormLatencies(back)
	out("scale_storm_timed_out", "%v", timedOut)
	out("scale_storm_nodes_with_state", "%d", len(stateMs))
	out("scale_storm_nodes_before_ready", "%d", beforeReady)
	if !timedOut {
		out("scale_storm_seconds", "%.2f", allSynced.Seconds())
	}
	printPercentiles("scale_storm_state_ms", stateMs)
	// A server answers some requests before it is ready: from its spawn
	// too, which bounds the return from below.
	fromSpawn, _ := tr.stormLatencies(spawned)
	printPercentiles("scale_storm_state_from_spawn_ms", fromSpawn)

	// The restarted server's counters start from zero at its start: all of
	// them are the return's.
	zero := &metricsSnapshot{samples: map[string][]sample{}}
	rr := end.requests(zero)
	secs := end.at.Sub(spawned).Seconds()
	out("scale_storm_requests", "%.0f", rr.total)
	out("scale_storm_requests_per_second", "%.1f", rr.total/secs)
	out("scale_storm_by_kind", "%q", rr.byKind())
	out("scale_storm_429", "%.0f", rr.code429)
	out("scale_storm_non_2xx", "%.0f", rr.failed)
	out("scale_storm_apf_rejected", "%q", end.byLabels("apiserver_flowcontrol_rejected_requests_total", "priority_level", "reason"))
	out("scale_storm_status_writes", "%.0f", rr.status)
	out("scale_storm_event_writes", "%.0f", rr.events)
	out("scale_storm_patch_node_status_p99_ms", "%.1f", end.latencyP99(zero, statusPatch)*1000)
	out("scale_storm_lease_update_p99_ms", "%.1f", end.latencyP99(zero, leaseUpdate)*1000)
	for _, level := range []string{"nodeguard", "system"} {
		isLevel := func(l map[string]string) bool { return l["priority_level"] == level }
		out("scale_storm_apf_wait_p99_ms_"+level, "%.1f", end.quantile(zero, "apiserver_flowcontrol_request_wait_duration_seconds", 0.99, isLevel)*1000)
	}
	printCores("storm", cpuBack, cpuEnd, end.at.Sub(back).Seconds())
	_, apiRSS := procStat(apiPid)
	out("scale_storm_apiserver_rss_mib", "%.0f", apiRSS)

	// The agents' own counters: every request of the outage failed, and
	// after it those refused or timed out on the way.
	sinkErr2, errs2 := sinkErrors(agents), errs.count()
	evErr2 := agentCounter(agents, "nodeguard_event_writes_total", "result", "error")
	out("scale_storm_outage_status_write_errors", "%d", sinkErr1-sinkErr0)
	out("scale_storm_return_status_write_errors", "%d", sinkErr2-sinkErr1)
	out("scale_storm_outage_event_write_errors", "%.0f", evErr1-evErr0)
	out("scale_storm_return_event_write_errors", "%.0f", evErr2-evErr1)
	out("scale_storm_outage_client_go_errors", "%d", errs1-errs0)
	out("scale_storm_return_client_go_errors", "%d", errs2-errs1)
	out("scale_storm_agent_outages_seen", "%.0f", agentCounter(agents, "nodeguard_apiserver_outages_total", "", "")-outages0)
	k2 := sumKubelets(kubelets)
	out("scale_storm_outage_kubelet_failed_updates", "%d", k1.updateFailures-k0.updateFailures)
	out("scale_storm_outage_kubelet_failed_reads", "%d", k1.readFailures-k0.readFailures)
	out("scale_storm_return_kubelet_failed_updates", "%d", k2.updateFailures-k1.updateFailures)
	out("scale_storm_return_kubelet_failed_reads", "%d", k2.readFailures-k1.readFailures)
	out("scale_storm_return_kubelet_conflicts", "%d", k2.conflicts-k1.conflicts)
	var renewMs []float64
	for _, k := range kubelets {
		if at := k.firstAfterBack.Load(); at != 0 {
			renewMs = append(renewMs, float64(at-back.UnixNano())/1e6)
		}
	}
	out("scale_storm_kubelets_renewed_after_return", "%d", len(renewMs))
	printPercentiles("scale_storm_kubelet_renewal_ms", renewMs)
	views.print(back)

	// The figure that must be 0: nodes whose lease check called the
	// kubelet stale at any time from the warm-up on, in the agent and on
	// the Node.
	out("scale_storm_lease_stale_nodes", "%d", countStale(verdicts, time.Now()))
	staleOnNode, staleMsg := tr.leaseStale()
	out("scale_storm_lease_stale_on_node", "%d", staleOnNode)
	if first := firstStale(verdicts); first != "" {
		out("scale_storm_lease_stale_first", "%q", first)
	} else if staleMsg != "" {
		out("scale_storm_lease_stale_first", "%q", staleMsg)
	}
	reasons, err := eventsByReason(ctx, admin, tr.index)
	if err != nil {
		return err
	}
	out("scale_storm_events_by_reason", "%q", reasons)
	return nil
}

// printPercentiles prints v's p50, p99 and max as name_p50 and so on.
func printPercentiles(name string, v []float64) {
	if len(v) == 0 {
		return
	}
	out(name+"_p50", "%.0f", percentile(v, 0.5))
	out(name+"_p99", "%.0f", percentile(v, 0.99))
	out(name+"_max", "%.0f", percentile(v, 1))
}

func leaseUpdate(l map[string]string) bool {
	return l["verb"] == "PUT" && l["resource"] == "leases"
}

// byLabels sums a counter by two labels, as "a/b=n" pairs.
func (s *metricsSnapshot) byLabels(name, a, b string) string {
	sums := map[string]float64{}
	for _, x := range s.samples[name] {
		sums[x.labels[a]+"/"+x.labels[b]] += x.value
	}
	var parts []string
	for k, v := range sums {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.0f", k, v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// leaseVerdicts is what one node's lease check said True, for the count
// that must stay 0.
type leaseVerdicts struct {
	mu    sync.Mutex
	first time.Time
	what  string
	n     int
}

func (v *leaseVerdicts) record(f finding.Finding) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.n++; v.first.IsZero() {
		v.first = f.Time
		v.what = fmt.Sprintf("%s: %s %v", f.Reason, f.Message, f.Facts)
	}
}

// countStale counts the nodes whose check said True before until.
func countStale(vs []leaseVerdicts, until time.Time) int {
	n := 0
	for i := range vs {
		vs[i].mu.Lock()
		if !vs[i].first.IsZero() && vs[i].first.Before(until) {
			n++
		}
		vs[i].mu.Unlock()
	}
	return n
}

func firstStale(vs []leaseVerdicts) string {
	var first time.Time
	what := ""
	for i := range vs {
		vs[i].mu.Lock()
		if !vs[i].first.IsZero() && (first.IsZero() || vs[i].first.Before(first)) {
			first, what = vs[i].first, vs[i].what
		}
		vs[i].mu.Unlock()
	}
	return what
}

// simKubelet renews one node's Lease as the kubelet's lease controller
// does, with the node's own credentials (API Priority and Fairness puts it
// in the system level, as a real kubelet) and connection.
type simKubelet struct {
	name   string
	leases coordinationclient.LeaseInterface
	dialer *connrotation.Dialer
	st     *stormState
	// latest is the Lease as last updated; only sync touches it.
	latest *coordinationv1.Lease

	firstRenewal     chan struct{}
	firstRenewalOnce sync.Once
	// firstAfterBack is when the first renewal after the server's return
	// succeeded, in Unix nanoseconds; afterBack closes then.
	firstAfterBack atomic.Int64
	afterBack      chan struct{}
	counts         kubeletCounts
	// lastRenewTime is the renewTime the last successful update wrote,
	// and maxGap the longest time between two since the last takeGap, in
	// nanoseconds: a gap past the lease check's threshold is a Lease
	// that was stale for real, however healthy the kubelet.
	lastRenewTime, maxGap atomic.Int64
}

type kubeletCounts struct {
	updateFailures, readFailures, conflicts int64
}

func newSimKubelet(c *testcluster.Cluster, name string, st *stormState) (*simKubelet, error) {
	rc, err := c.UserConfig("system:node:"+name, []string{"system:nodes"}, "")
	if err != nil {
		return nil, fmt.Errorf("credentials for the kubelet of %s: %w", name, err)
	}
	// The kubelet's heartbeat client: no client-side rate limit, the
	// status update frequency as its timeout, protobuf; and, as the
	// kubelet does after repeated failures, its connections closed.
	rc.QPS, rc.Burst = -1, 0
	rc.Timeout = kubeletRequestTimeout
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	d := connrotation.NewDialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	rc.Dial = d.DialContext
	client, err := coordinationclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("the kubelet client of %s: %w", name, err)
	}
	return &simKubelet{name: name, leases: client.Leases(kube.NodeLeaseNamespace), dialer: d, st: st,
		firstRenewal: make(chan struct{}), afterBack: make(chan struct{})}, nil
}

// sync is one renewal: an update of the Lease last written, and when that
// fails, a read (retried until it works) and an update of what it read.
func (k *simKubelet) sync(ctx context.Context) {
	if k.latest != nil && k.retryUpdate(ctx, k.latest) == nil {
		return
	}
	l := k.ensure(ctx)
	k.latest = l
	if l != nil {
		k.retryUpdate(ctx, l)
	}
}

// ensure reads the Lease, backing off from 200 ms to 7 s while the read
// fails; nil once ctx ends. The setup created every Lease, so the create
// the kubelet makes when it finds none is left out.
func (k *simKubelet) ensure(ctx context.Context) *coordinationv1.Lease {
	sleep := 100 * time.Millisecond
	for {
		l, err := k.leases.Get(ctx, k.name, metav1.GetOptions{})
		if err == nil {
			return l
		}
		atomic.AddInt64(&k.counts.readFailures, 1)
		sleep = min(2*sleep, kubeletEnsureBackoffMax)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(sleep):
		}
	}
}

func (k *simKubelet) retryUpdate(ctx context.Context, base *coordinationv1.Lease) error {
	for i := range kubeletUpdateRetries {
		l := base.DeepCopy()
		now := metav1.NewMicroTime(time.Now())
		duration := int32(kubeletLeaseSeconds)
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &k.name, &duration, &now
		got, err := k.leases.Update(ctx, l, metav1.UpdateOptions{})
		if err == nil {
			k.latest = got
			k.renewed(now.Time)
			return nil
		}
		atomic.AddInt64(&k.counts.updateFailures, 1)
		if apierrors.IsConflict(err) {
			atomic.AddInt64(&k.counts.conflicts, 1)
			if base = k.ensure(ctx); base == nil {
				return err
			}
			continue
		}
		if i > 0 {
			k.dialer.CloseAll()
		}
	}
	return fmt.Errorf("the kubelet of %s: %d updates of its Lease failed", k.name, kubeletUpdateRetries)
}

func (k *simKubelet) renewed(renewTime time.Time) {
	k.firstRenewalOnce.Do(func() { close(k.firstRenewal) })
	if prev := k.lastRenewTime.Swap(renewTime.UnixNano()); prev != 0 {
		gap := renewTime.UnixNano() - prev
		for old := k.maxGap.Load(); gap > old && !k.maxGap.CompareAndSwap(old, gap); old = k.maxGap.Load() {
		}
	}
	if k.st.back.Load() != 0 && k.firstAfterBack.CompareAndSwap(0, time.Now().UnixNano()) {
		close(k.afterBack)
	}
}

// renewedAfterBack waits up to d for the first renewal after the return.
func (k *simKubelet) renewedAfterBack(d time.Duration) {
	select {
	case <-k.afterBack:
	case <-time.After(max(d, 0)):
	}
}

// takeGaps returns the longest gap between two renewals of any kubelet
// since the last call, and how many kubelets had one longer than
// threshold; it starts the next count.
func takeGaps(ks []*simKubelet, threshold time.Duration) (longest time.Duration, over int) {
	for _, k := range ks {
		g := time.Duration(k.maxGap.Swap(0))
		longest = max(longest, g)
		if g > threshold {
			over++
		}
	}
	return longest, over
}

func sumKubelets(ks []*simKubelet) kubeletCounts {
	var c kubeletCounts
	for _, k := range ks {
		c.updateFailures += atomic.LoadInt64(&k.counts.updateFailures)
		c.readFailures += atomic.LoadInt64(&k.counts.readFailures)
		c.conflicts += atomic.LoadInt64(&k.counts.conflicts)
	}
	return c
}

// viewPoll follows each agent's Lease view after the server's return:
// when it is current again, when it first shows a renewal made after the
// spawn, and by how much that renewal came before the lease check's
// threshold from the view's return ran out (the margin; below zero the
// check would call the kubelet stale, but for the read that confirms).
type viewPoll struct {
	agents    []*simNode
	threshold time.Duration
	spawned   time.Time
	currentAt []time.Time
	seenAt    []time.Time
	margin    []time.Duration
}

// viewPollEvery is how often the views are looked at: a look is a lock
// and a map lookup, 4,000 a second at 1,000 nodes.
const viewPollEvery = 250 * time.Millisecond

func newViewPoll(agents []*simNode, threshold time.Duration, spawned time.Time) *viewPoll {
	return &viewPoll{agents: agents, threshold: threshold, spawned: spawned,
		currentAt: make([]time.Time, len(agents)), seenAt: make([]time.Time, len(agents)), margin: make([]time.Duration, len(agents))}
}

func (p *viewPoll) run(ctx context.Context) {
	t := time.NewTicker(viewPollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for i, a := range p.agents {
			if !p.seenAt[i].IsZero() {
				continue
			}
			l, ok, since := a.leases.NodeLease()
			if since.IsZero() || since.Before(p.spawned) {
				continue
			}
			if p.currentAt[i].IsZero() {
				p.currentAt[i] = now
			}
			if ok && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(p.spawned) {
				p.seenAt[i] = now
				p.margin[i] = since.Add(p.threshold).Sub(now)
			}
		}
	}
}

// print prints the views' figures from back, the server's readiness; run
// has returned.
func (p *viewPoll) print(back time.Time) {
	var current, seen, margin []float64
	for i := range p.agents {
		if !p.currentAt[i].IsZero() {
			current = append(current, p.currentAt[i].Sub(back).Seconds()*1000)
		}
		if !p.seenAt[i].IsZero() {
			seen = append(seen, p.seenAt[i].Sub(back).Seconds()*1000)
			margin = append(margin, p.margin[i].Seconds()*1000)
		}
	}
	out("scale_storm_lease_views_current", "%d", len(current))
	printPercentiles("scale_storm_lease_view_current_ms", current)
	out("scale_storm_lease_views_renewed", "%d", len(seen))
	printPercentiles("scale_storm_lease_renewal_seen_ms", seen)
	if len(margin) > 0 {
		out("scale_storm_lease_margin_ms_min", "%.0f", percentile(margin, 0))
		out("scale_storm_lease_margin_ms_p50", "%.0f", percentile(margin, 0.5))
	}
}
