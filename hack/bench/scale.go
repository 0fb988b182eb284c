package main

// The scale figures: many simulated nodes in this process, each with the
// production agent's API machinery (its own client, connection, rate limits,
// watches and node reporter) but no checks, against the one kube-apiserver
// of internal/testcluster. The checks are left out because they would all
// read this one machine; what reaches the API server depends only on the
// findings, which the bench makes up.
//
// Assumptions behind the 5,000-node extrapolation (printed as scale_5000_*):
//   - Each agent's requests are independent of the others', so steady and
//     start-up request counts grow linearly with the node count.
//   - The burst's duration at 5,000 nodes is 5,000 times the requests one
//     node completes in the burst, divided by the completion rate measured
//     here. That rate is set less by CPU than by API Priority and Fairness:
//     every agent authenticates as the same ServiceAccount, so all of them
//     are one flow with a few queues, and what does not fit is refused with
//     429 and retried by client-go a second later. The estimate is rough;
//     -scale-nodes 5000 measures it (about 3 minutes and 6 GiB here).
//   - Latency percentiles are not extrapolated: they depend on the control
//     plane's size, not on a ratio.
// Not simulated: the kubelets' own Node status updates and Lease renewals
// (a real cluster has them whatever nodeguard does), and more pods than the
// agent's own per node.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/internal/testcluster"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

const (
	agentNamespace = "nodeguard"
	agentAccount   = "nodeguard"
	// setupConcurrency bounds the bench's own object creation.
	setupConcurrency = 50
	// phaseTimeout bounds waiting for start-up and the burst to complete.
	phaseTimeout = 5 * time.Minute
	// The reflector's watches end after 5 to 10 minutes and are opened
	// again: on average every 7.5 minutes per watch.
	meanWatchTimeout = 450 * time.Second
	// maxWaveWait bounds the wait for the heartbeats that follow the burst.
	maxWaveWait = 3 * time.Minute
)

// scale runs *scaleNodes simulated agents against c and prints the figures.
func scale(c *testcluster.Cluster) error {
	n := *scaleNodes
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cfg, err := config.Load("", all.Registry)
	if err != nil {
		return err
	}
	owned, healthy, err := productionConditions(cfg)
	if err != nil {
		return err
	}
	types := owned // BuildChecks lists each type once
	heartbeat := cfg.Reporter.Heartbeat.Duration
	productionHeartbeat := heartbeat
	if *scaleHeartbeat > 0 {
		heartbeat = *scaleHeartbeat
	}
	errs := countKlogErrors()

	adminConfig := rest.CopyConfig(c.Config)
	adminConfig.QPS, adminConfig.Burst = 1000, 2000
	admin, err := kubernetes.NewForConfig(adminConfig)
	if err != nil {
		return err
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("scale-%05d", i)
	}

	t0 := time.Now()
	tokens, nodeBytes, err := setupNodes(ctx, c, admin, names)
	if err != nil {
		return err
	}
	out("scale_nodes", "%d", n)
	out("scale_setup_seconds", "%.1f", time.Since(t0).Seconds())
	out("scale_node_object_bytes", "%d", nodeBytes)
	out("scale_condition_types", "%d", len(types))
	out("scale_client_qps", "%g", cfg.Reporter.ClientQPS)
	out("scale_client_burst", "%d", cfg.Reporter.ClientBurst)
	out("scale_heartbeat_seconds", "%.0f", heartbeat.Seconds())
	out("scale_heartbeat_production_seconds", "%.0f", productionHeartbeat.Seconds())
	out("scale_start_concurrency", "%d", *scaleConcurrency)

	tr := newTracker(names, types)
	if err := tr.run(ctx, admin); err != nil {
		return err
	}
	pr := processes{api: childPid("kube-apiserver"), etcd: childPid("etcd")}

	// Baseline: the API server's own traffic and the bench's watches,
	// before any agent runs.
	runtime.GC()
	rss0, heap0, gor0 := selfMemory()
	conns0 := connectionsTo(c.APIPort)
	b0, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	apiRSS0 := pr.usage().apiRSS
	time.Sleep(10 * time.Second)
	b1, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	baseline := b1.requests(b0).total / b1.at.Sub(b0.at).Seconds()
	watches0 := b1.watches()
	out("scale_baseline_requests_per_second", "%.2f", baseline)

	// Start-up.
	base := &rest.Config{Host: c.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: c.Config.CAData}}
	agentCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	var wg sync.WaitGroup
	agents := make([]*simNode, n)
	cpu1 := pr.usage()
	s0, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	start := time.Now()
	concurrency := *scaleConcurrency
	if concurrency <= 0 {
		concurrency = n
	}
	sem := make(chan struct{}, concurrency)
	startedAt := make([]time.Time, n)
	for i, name := range names {
		sem <- struct{}{}
		startedAt[i] = time.Now()
		a, err := startNode(agentCtx, &wg, base, tokens[i], name, owned, healthy, cfg, heartbeat)
		if err != nil {
			return err
		}
		agents[i] = a
		// A slot is free once this agent's first status write is visible:
		// at most `concurrency` agents are starting at any time.
		go func() {
			select {
			case <-tr.adopted[i]:
			case <-time.After(phaseTimeout):
			}
			<-sem
		}()
	}
	select {
	case <-tr.allAdopted:
	case <-time.After(phaseTimeout):
		return fmt.Errorf("start-up: %d of %d nodes show their conditions after %s; %d status write errors; client-go errors: %s",
			tr.countAdopted(), n, phaseTimeout, sinkErrors(agents), errs.summary())
	}
	startup := time.Since(start)
	var adoption []float64
	for i := range names {
		adoption = append(adoption, tr.adoptionTime(i).Sub(startedAt[i]).Seconds()*1000)
	}
	// Past the writes that follow adoption (the probe checks' first
	// findings, coalesced one MinWriteInterval later).
	time.Sleep(2*cfg.Reporter.MinWriteInterval.Duration + time.Second)
	s1, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu2 := pr.usage()
	su := s1.requests(s0)
	startupRequests := su.total - baseline*s1.at.Sub(s0.at).Seconds()
	out("scale_startup_seconds", "%.1f", startup.Seconds())
	out("scale_startup_adoption_ms_p50", "%.0f", percentile(adoption, 0.5))
	out("scale_startup_adoption_ms_p99", "%.0f", percentile(adoption, 0.99))
	out("scale_startup_requests", "%.0f", su.total)
	out("scale_startup_requests_per_node", "%.2f", startupRequests/float64(n))
	// Over the start-up itself, not the settling after it.
	out("scale_startup_requests_per_second", "%.1f", startupRequests/startup.Seconds())
	out("scale_startup_by_kind", "%q", su.byKind())
	out("scale_startup_429", "%.0f", su.code429)
	out("scale_startup_p99_ms", "%.1f", s1.latencyP99(s0, anyRequest)*1000)
	// The simulated agents (the bench's cores) share the machine with the
	// API server.
	printCores("startup", cpu1, cpu2, s1.at.Sub(s0.at).Seconds())

	conns := connectionsTo(c.APIPort)
	out("scale_connections", "%d", conns)
	out("scale_connections_bench_admin", "%d", conns0)
	runtime.GC()
	rss1, heap1, gor1 := selfMemory()
	out("scale_bench_rss_kib_per_node", "%.0f", (rss1-rss0)/float64(n)/1024)
	out("scale_bench_heap_kib_per_node", "%.0f", (heap1-heap0)/float64(n)/1024)
	out("scale_bench_goroutines_per_node", "%.1f", float64(gor1-gor0)/float64(n))
	out("scale_apiserver_rss_mib", "%.0f", cpu2.apiRSS)
	out("scale_apiserver_rss_kib_per_node", "%.0f", (cpu2.apiRSS-apiRSS0)*1024/float64(n))
	_, etcdRSS := procStat(pr.etcd)
	out("scale_etcd_rss_mib", "%.0f", etcdRSS)

	// Steady state: nothing wrong anywhere.
	st0, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu3 := pr.usage()
	errs0, sinkErr0 := errs.count(), sinkErrors(agents)
	tr.resetWrites()
	time.Sleep(*scaleWindow)
	st1, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu4 := pr.usage()
	window := st1.at.Sub(st0.at).Seconds()
	sr := st1.requests(st0)
	watches := st1.watches()
	agentWatches := watches - watches0
	peak, writesSeen := tr.writeStats()
	out("scale_steady_window_seconds", "%.0f", window)
	out("scale_steady_requests_per_second", "%.2f", sr.total/window)
	out("scale_steady_agent_requests_per_second", "%.2f", max(0, sr.total/window-baseline))
	out("scale_steady_writes_per_second", "%.2f", sr.writes/window)
	out("scale_steady_reads_per_second", "%.2f", sr.reads/window)
	// The API server counts a watch when it ends: this is how often the
	// agents' watches end and are opened again.
	out("scale_steady_watch_requests_per_second", "%.2f", sr.watchRequests/window)
	out("scale_steady_status_writes_per_second", "%.2f", sr.status/window)
	out("scale_steady_status_writes_seen", "%d", writesSeen)
	out("scale_steady_status_peak_writes_per_second", "%d", peak)
	// What a window of this length cannot show when it is shorter than the
	// heartbeat or the reflectors' watch timeouts: both start together at
	// start-up and would fall due later.
	out("scale_steady_expected_heartbeat_writes_per_second", "%.2f", float64(n)/meanHeartbeat(heartbeat).Seconds())
	out("scale_steady_expected_production_heartbeat_writes_per_second", "%.2f", float64(n)/meanHeartbeat(productionHeartbeat).Seconds())
	out("scale_steady_expected_reflector_rewatch_per_second", "%.2f", agentWatches/meanWatchTimeout.Seconds())
	out("scale_steady_by_kind", "%q", sr.byKind())
	out("scale_open_watches", "%.0f", watches)
	out("scale_agent_watches", "%.0f", agentWatches)
	out("scale_agent_watches_per_node", "%.2f", agentWatches/float64(n))
	samples := st1.latencyCount(st0, anyRequest)
	out("scale_steady_samples", "%.0f", samples)
	// A p99 of a handful of requests (often only the API server's own
	// lease renewals) says nothing.
	if samples >= 100 {
		out("scale_steady_p99_ms", "%.1f", st1.latencyP99(st0, anyRequest)*1000)
	} else {
		out("scale_steady_p99_ms", "%q", "n/a: too few requests")
	}
	printCores("steady", cpu3, cpu4, window)
	out("scale_steady_429", "%.0f", sr.code429)
	out("scale_steady_status_write_errors", "%d", sinkErrors(agents)-sinkErr0)
	out("scale_steady_client_go_errors", "%d", errs.count()-errs0)

	// Burst: a container runtime hangs on every node at the same instant,
	// as a bad runtime rollout would do. The kmsg check then reports one
	// TaskHung event and two conditions, which coalesce into one write.
	marker := fmt.Sprintf("scale-burst-%d", rand.Uint32())
	errs0, sinkErr0 = errs.count(), sinkErrors(agents)
	bu0, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu5 := pr.usage()
	tr.startBurst(marker)
	burstAt := time.Now()
	msg := "INFO: task containerd:1234 blocked for more than 120 seconds. " + marker
	for _, a := range agents {
		now := time.Now()
		ev := finding.Event(finding.SeverityWarning, "TaskHung", msg)
		dl := finding.Condition(finding.KernelDeadlock.Type, finding.StatusTrue, "ContainerRuntimeHung", msg)
		rt := finding.Condition(finding.ContainerRuntimeUnresponsive.Type, finding.StatusTrue, "RuntimeTaskHung", msg)
		for _, f := range []finding.Finding{ev, dl, rt} {
			f.Check, f.Time = "kmsg", now
			a.rep.Report(f)
		}
	}
	timedOut := false
	select {
	case <-tr.burstDone:
	case <-time.After(phaseTimeout):
		timedOut = true
	}
	burst := time.Since(burstAt)
	bu1, err := scrape(ctx, admin)
	if err != nil {
		return err
	}
	cpu6 := pr.usage()
	span := bu1.at.Sub(bu0.at).Seconds()
	br := bu1.requests(bu0)
	condLat, evLat := tr.burstLatencies(burstAt)
	peak, writesSeen = tr.writeStats()
	level := bu1.topPriorityLevel(bu0)
	out("scale_burst_timed_out", "%v", timedOut)
	out("scale_burst_nodes_with_condition", "%d", len(condLat))
	out("scale_burst_nodes_with_event", "%d", len(evLat))
	out("scale_burst_seconds", "%.2f", burst.Seconds())
	if len(condLat) > 0 {
		out("scale_burst_condition_ms_p50", "%.0f", percentile(condLat, 0.5))
		out("scale_burst_condition_ms_p99", "%.0f", percentile(condLat, 0.99))
		out("scale_burst_condition_ms_max", "%.0f", percentile(condLat, 1))
	}
	if len(evLat) > 0 {
		out("scale_burst_event_ms_p50", "%.0f", percentile(evLat, 0.5))
		out("scale_burst_event_ms_p99", "%.0f", percentile(evLat, 0.99))
		out("scale_burst_event_ms_max", "%.0f", percentile(evLat, 1))
	}
	out("scale_burst_requests", "%.0f", br.total)
	out("scale_burst_requests_per_second", "%.1f", br.total/span)
	out("scale_burst_completed_requests_per_second", "%.1f", (br.total-br.failed)/span)
	out("scale_burst_writes_per_second", "%.1f", br.writes/span)
	out("scale_burst_status_writes", "%.0f", br.status)
	out("scale_burst_event_writes", "%.0f", br.events)
	out("scale_burst_status_writes_seen", "%d", writesSeen)
	out("scale_burst_status_peak_writes_per_second", "%d", peak)
	out("scale_burst_by_kind", "%q", br.byKind())
	out("scale_burst_429", "%.0f", br.code429)
	out("scale_burst_non_2xx", "%.0f", br.failed)
	out("scale_burst_apf_rejected", "%.0f", bu1.sum("apiserver_flowcontrol_rejected_requests_total", nil)-bu0.sum("apiserver_flowcontrol_rejected_requests_total", nil))
	// A failed status write is retried by the agent; client-go's errors are
	// mostly events it failed to write, which it retries a few times, 10 s
	// apart, and then drops.
	out("scale_burst_status_write_errors", "%d", sinkErrors(agents)-sinkErr0)
	out("scale_burst_client_go_errors", "%d", errs.count()-errs0)
	if e := errs.summary(); e != "" {
		out("scale_client_error_messages", "%q", e)
	}
	out("scale_burst_samples", "%.0f", bu1.latencyCount(bu0, anyRequest))
	out("scale_burst_p99_ms", "%.1f", bu1.latencyP99(bu0, anyRequest)*1000)
	out("scale_burst_patch_node_status_p99_ms", "%.1f", bu1.latencyP99(bu0, statusPatch)*1000)
	out("scale_burst_post_events_p99_ms", "%.1f", bu1.latencyP99(bu0, eventPost)*1000)
	out("scale_agent_priority_level", "%q", level)
	if level != "" {
		isLevel := func(l map[string]string) bool { return l["priority_level"] == level }
		out("scale_agent_priority_level_seats", "%.0f", bu1.sum("apiserver_flowcontrol_nominal_limit_seats", isLevel))
		out("scale_burst_apf_wait_p99_ms", "%.1f", bu1.quantile(bu0, "apiserver_flowcontrol_request_wait_duration_seconds", 0.99, isLevel)*1000)
	}
	printCores("burst", cpu5, cpu6, span)
	out("scale_apiserver_rss_mib_after_burst", "%.0f", cpu6.apiRSS)

	// Every node wrote within the burst, so their heartbeats now fall due
	// together: each heartbeat period brings the burst's status writes
	// again, without its events.
	if heartbeat <= maxWaveWait {
		tr.resetWrites()
		w0, err := scrape(ctx, admin)
		if err != nil {
			return err
		}
		select {
		case <-tr.writesReached(n):
		case <-time.After(heartbeat + phaseTimeout):
		}
		w1, err := scrape(ctx, admin)
		if err != nil {
			return err
		}
		peak, seen := tr.writeStats()
		first, last := tr.writeSpan()
		wr := w1.requests(w0)
		out("scale_wave_status_writes_seen", "%d", seen)
		out("scale_wave_seconds", "%.2f", last.Sub(first).Seconds())
		out("scale_wave_after_burst_seconds", "%.1f", first.Sub(burstAt).Seconds())
		out("scale_wave_peak_writes_per_second", "%d", peak)
		out("scale_wave_429", "%.0f", wr.code429)
		out("scale_wave_patch_node_status_p99_ms", "%.1f", w1.latencyP99(w0, statusPatch)*1000)
	} else {
		out("scale_wave", "%q", fmt.Sprintf("not measured: the heartbeat is longer than %s (try -scale-heartbeat 30s)", maxWaveWait))
	}

	// Which events the agents wrote in all: more than the burst's if their
	// view of the API server's reachability counted its pushback as an
	// outage. Past client-go's 10 s wait before retrying an event.
	time.Sleep(12 * time.Second)
	reasons, err := eventsByReason(ctx, admin, tr.index)
	if err != nil {
		return err
	}
	out("scale_events_by_reason", "%q", reasons)

	// 5,000 nodes, from the assumptions at the top of this file.
	f := 5000 / float64(n)
	out("scale_5000_startup_requests", "%.0f", startupRequests*f)
	out("scale_5000_steady_agent_requests_per_second", "%.2f", max(0, sr.total/window-baseline)*f)
	out("scale_5000_heartbeat_writes_per_second", "%.1f", 5000/meanHeartbeat(productionHeartbeat).Seconds())
	out("scale_5000_watch_requests_per_second", "%.1f", sr.watchRequests/window*f)
	// Reflectors open their watches again when the server ends them,
	// every 5 to 10 minutes: a rate a 60 s window right after start-up
	// does not see.
	out("scale_5000_expected_rewatch_per_second", "%.1f", agentWatches/meanWatchTimeout.Seconds()*f)
	out("scale_5000_watches", "%.0f", agentWatches*f)
	out("scale_5000_connections", "%.0f", float64(conns-conns0)*f)
	out("scale_5000_apiserver_rss_mib_for_agents", "%.0f", (cpu2.apiRSS-apiRSS0)*f)
	if done := br.total - br.failed; done > 0 {
		// Linear in the nodes: the writes that succeeded, at the rate they
		// succeeded here. The 5,000-node run itself says how far off that is.
		out("scale_5000_burst_successful_writes", "%.0f", done*f)
		out("scale_5000_burst_seconds_linear", "%.1f", burst.Seconds()*f)
	}

	if *scaleOutage > 0 {
		if err := storm(ctx, c, admin, tr, agents, names, cfg, pr, errs); err != nil {
			return err
		}
	} else {
		out("scale_storm", "%q", "not measured: -scale-outage 0")
	}

	stopAgents()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "bench: some simulated agents did not stop within 30s")
	}
	return nil
}

// meanHeartbeat is the mean time between heartbeat writes: the reporter
// draws each period uniformly from the last quarter of the heartbeat.
func meanHeartbeat(d time.Duration) time.Duration { return d * 7 / 8 }

// processes are the API server's and etcd's, whose cost each phase
// reports beside the bench's own.
type processes struct{ api, etcd int }

// usage is the CPU seconds of the API server, etcd and the bench, and the
// API server's RSS in MiB, at one moment.
type usage struct{ apiCPU, etcdCPU, selfCPU, apiRSS float64 }

func (p processes) usage() usage {
	var u usage
	u.apiCPU, u.apiRSS = procStat(p.api)
	u.etcdCPU, _ = procStat(p.etcd)
	u.selfCPU, _ = procStat(os.Getpid())
	return u
}

// printCores prints the cores each process used between a and b, secs
// apart.
func printCores(phase string, a, b usage, secs float64) {
	out("scale_"+phase+"_apiserver_cores", "%.3f", (b.apiCPU-a.apiCPU)/secs)
	out("scale_"+phase+"_etcd_cores", "%.3f", (b.etcdCPU-a.etcdCPU)/secs)
	out("scale_"+phase+"_bench_cores", "%.3f", (b.selfCPU-a.selfCPU)/secs)
}

// productionConditions builds the default checks, without running them, for
// the condition types a node's reporter owns and, for the probing checks, the
// healthy findings they send on their first probe.
func productionConditions(cfg *config.Config) (owned []finding.ConditionDefault, healthy []finding.Finding, err error) {
	built, err := agent.BuildChecks(cfg, all.Registry, checks.Env{Log: zap.NewNop(), NodeName: "scale", Metrics: prometheus.NewRegistry(), Now: time.Now})
	if err != nil {
		return nil, nil, err
	}
	return built.Owned, built.Healthy(false), nil
}

// setupNodes creates what a node has before the agent starts there: its
// Node and Lease (as the kubelet would), the agent's pod bound to it, and a
// ServiceAccount token bound to that pod. It returns the tokens and the size
// of one Node object.
func setupNodes(ctx context.Context, c *testcluster.Cluster, admin kubernetes.Interface, names []string) ([]string, int, error) {
	// The agent's real identity, RBAC and admission policies: a client with
	// system:masters would skip authorization and land in API Priority and
	// Fairness's exempt level, which no DaemonSet does.
	for _, f := range []string{"namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "admission-policy.yaml", "flowcontrol.yaml"} {
		if o, err := c.Kubectl(ctx, "apply", "-f", filepath.Join(*scaleDeploy, f)); err != nil {
			return nil, 0, fmt.Errorf("applying %s: %w: %s", f, err, o)
		}
	}
	nodeBytes := 0
	tokens := make([]string, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(setupConcurrency)
	for i, name := range names {
		g.Go(func() error {
			node := simulatedNode(name)
			if i == 0 {
				b, _ := node.Marshal()
				nodeBytes = len(b)
			}
			if _, err := admin.CoreV1().Nodes().Create(gctx, node, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating node %s: %w", name, err)
			}
			duration := int32(40)
			now := metav1.NewMicroTime(time.Now())
			if _, err := admin.CoordinationV1().Leases(kube.NodeLeaseNamespace).Create(gctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &duration, RenewTime: &now},
			}, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating lease %s: %w", name, err)
			}
			pod, err := admin.CoreV1().Pods(agentNamespace).Create(gctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "nodeguard-" + name, Labels: map[string]string{"app.kubernetes.io/name": "nodeguard"}},
				Spec: corev1.PodSpec{
					NodeName: name, ServiceAccountName: agentAccount,
					Containers: []corev1.Container{{Name: "nodeguard", Image: "nodeguard:bench"}},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("creating pod for %s: %w", name, err)
			}
			// Bound to the pod, the token names the node, which the
			// admission policies require.
			exp := int64(3600)
			tr, err := admin.CoreV1().ServiceAccounts(agentNamespace).CreateToken(gctx, agentAccount, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp, BoundObjectRef: &authenticationv1.BoundObjectReference{
					Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
			}, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("requesting a token for %s: %w", name, err)
			}
			tokens[i] = tr.Status.Token
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	// Fail here, not as a start-up that never ends, if the tokens lack what
	// the admission policies look for.
	rc := &rest.Config{Host: c.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: c.Config.CAData}, BearerToken: tokens[0]}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, 0, err
	}
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("reviewing the agent's identity: %w", err)
	}
	if got := review.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != names[0] {
		return nil, 0, fmt.Errorf("the agent's token says node %v, want %s: the admission policies would refuse its writes", got, names[0])
	}
	// And that the policies are in force (they load asynchronously): the
	// figures should include their cost.
	if len(names) > 1 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := client.CoreV1().Nodes().PatchStatus(ctx, names[1], []byte(`{"status":{}}`))
			if apierrors.IsForbidden(err) {
				break
			}
			if time.Now().After(deadline) {
				return nil, 0, fmt.Errorf("the admission policies in %s do not stop one node's agent from writing another's status (%v)", *scaleDeploy, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return tokens, nodeBytes, nil
}

// simulatedNode is a Node as a kubelet registers it, so that each status
// patch merges into, stores and sends out an object of realistic size.
func simulatedNode(name string) *corev1.Node {
	q := resource.MustParse
	now := metav1.Now()
	kubeletCond := func(t corev1.NodeConditionType, status corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: status, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	var images []corev1.ContainerImage
	for i := range 30 {
		repo := fmt.Sprintf("registry.example.com/team%d/service-%d", i%7, i)
		images = append(images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("%s@sha256:%064x", repo, i+1), fmt.Sprintf("%s:v1.%d.0", repo, i)},
			SizeBytes: int64(20+i*7) << 20,
		})
	}
	ip := fmt.Sprintf("10.%d.%d.%d", 1+len(name)%200, rand.IntN(250), 1+rand.IntN(250))
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"node.kubernetes.io/instance-type": "m6i.2xlarge", "topology.kubernetes.io/region": "eu-west-1",
			"topology.kubernetes.io/zone": "eu-west-1a",
		}, Annotations: map[string]string{
			"node.alpha.kubernetes.io/ttl":                           "0",
			"volumes.kubernetes.io/controller-managed-attach-detach": "true",
		}},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.0.0/24", PodCIDRs: []string{"10.244.0.0/24"}, ProviderID: "aws:///eu-west-1a/i-0" + name},
		Status: corev1.NodeStatus{
			Capacity: corev1.ResourceList{corev1.ResourceCPU: q("8"), corev1.ResourceMemory: q("32386524Ki"),
				corev1.ResourcePods: q("110"), corev1.ResourceEphemeralStorage: q("104845292Ki")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: q("7910m"), corev1.ResourceMemory: q("31369692Ki"),
				corev1.ResourcePods: q("110"), corev1.ResourceEphemeralStorage: q("95551679124")},
			Conditions: []corev1.NodeCondition{
				kubeletCond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				kubeletCond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				kubeletCond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				kubeletCond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
			},
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{MachineID: fmt.Sprintf("%032x", rand.Uint64()), SystemUUID: fmt.Sprintf("ec2%029x", rand.Uint64()),
				BootID: fmt.Sprintf("%032x", rand.Uint64()), KernelVersion: "6.1.0-28-cloud-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)",
				ContainerRuntimeVersion: "containerd://1.7.24", KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64"},
			Images: images,
		},
	}
}

// simNode is one simulated agent: the reporting side internal/agent builds
// for a node that talks to an API server, fed by simulated checks, with no
// HTTP server.
type simNode struct {
	rep     *reporter.Reporter
	sink    *reporter.NodeSink
	metrics *prometheus.Registry
	// leases is the agent's Lease watch, and confirm the client its
	// Reread would read with: the recovery storm runs the lease check on
	// it once a simulated kubelet renews the Lease.
	leases  *kube.LeaseWatcher
	confirm kube.Client
}

func startNode(ctx context.Context, wg *sync.WaitGroup, base *rest.Config, token, name string,
	owned []finding.ConditionDefault, healthy []finding.Finding, production *config.Config, heartbeat time.Duration) (*simNode, error) {
	rc := production.Reporter
	// As agent.ClusterConfig sets it up.
	cfg := rest.CopyConfig(base)
	cfg.BearerToken = token
	kube.ForAgent(cfg, float32(rc.ClientQPS), rc.ClientBurst)
	// A dial function of its own keeps client-go's transport cache from
	// handing every agent the same connection: its key holds the dialer, not
	// the bearer token. Each agent then has its own TCP connection, as on
	// separate machines.
	cfg.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	clients, err := kube.NewClients(cfg)
	if err != nil {
		return nil, err
	}
	nodeCfg := *production
	nodeCfg.NodeName = name
	nodeCfg.Reporter.Heartbeat = finding.Duration{Duration: heartbeat}
	// The simulated agents share one process and one disk: each keeps its
	// event spool in memory, not all in one stateDir.
	nodeCfg.StateDir = ""
	reg := prometheus.NewRegistry()
	r, err := agent.BuildReporting(&nodeCfg, owned, agent.Deps{Log: zap.NewNop(), Metrics: reg, Clients: &clients, BootTime: time.Now().Add(-time.Hour)})
	if err != nil {
		return nil, err
	}
	// The lease watch's Confirm stays unset, so Reread reads nothing, until
	// the recovery storm starts a simulated kubelet on the node: until then
	// the Leases are never renewed, and a lease check confirming each stale
	// one would measure a cluster whose kubelets all stopped.
	confirm := r.Leases.Confirm
	r.Leases.Confirm = nil
	wg.Add(1)
	// Off this goroutine, so that the agents start side by side: the Node
	// is read, then the checks report.
	go func() {
		defer wg.Done()
		if err := r.Start(ctx, ctx, nil); err == nil {
			now := time.Now()
			for _, f := range healthy {
				f.Time = now
				r.Reporter.Report(f)
			}
		}
		<-ctx.Done()
		r.Wait(time.Minute)
	}()
	return &simNode{rep: r.Reporter, sink: r.Node, metrics: reg, leases: r.Leases, confirm: confirm}, nil
}

// eventsByReason counts the events about the simulated nodes by reason.
func eventsByReason(ctx context.Context, admin kubernetes.Interface, nodes map[string]int) (string, error) {
	list, err := admin.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	counts := map[string]int32{}
	for _, e := range list.Items {
		if _, ok := nodes[e.InvolvedObject.Name]; ok {
			counts[e.Reason] += max(e.Count, 1)
		}
	}
	var parts []string
	for r, c := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", r, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, " "), nil
}

// sinkErrors sums the failed status writes the agents counted.
func sinkErrors(agents []*simNode) int64 {
	return int64(agentCounter(agents, "nodeguard_node_status_writes_total", "result", "error"))
}

// agentCounter sums the counter name over the agents' registries, only
// its series whose label is value when label is set.
func agentCounter(agents []*simNode, name, label, value string) float64 {
	var total float64
	for _, a := range agents {
		if a == nil {
			continue
		}
		fams, err := a.metrics.Gather()
		if err != nil {
			continue
		}
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				match := label == ""
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == value {
						match = true
					}
				}
				if match {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

// tracker follows every Node and the burst's events through the bench's
// own watches: when each node first shows nodeguard's conditions, when it
// shows the burst's, and how many status writes arrive each second.
type tracker struct {
	index map[string]int
	types map[string]bool

	adopted    []chan struct{}
	allAdopted chan struct{}
	burstDone  chan struct{}

	mu         sync.Mutex
	adoptedAt  []time.Time
	nAdopted   int
	marker     string
	condAt     []time.Time
	eventAt    []time.Time
	nCond      int
	nEvent     int
	perSecond  map[int64]int
	writesSeen int
	firstWrite time.Time
	lastWrite  time.Time
	// wantWrites, when set, is closed once writesSeen reaches its count.
	wantWrites   chan struct{}
	wantWritesAt int

	// The recovery storm: when each Node first held the state its agent
	// was given during the outage (stormDone closes when all have), and
	// when each first showed KubeletLeaseStale=True, at any time.
	stormMarker       string
	stormAt           []time.Time
	nStorm            int
	stormDone         chan struct{}
	leaseStaleAt      []time.Time
	nLeaseStale       int
	leaseStaleMessage string
}

func newTracker(names []string, types []finding.ConditionDefault) *tracker {
	t := &tracker{index: map[string]int{}, types: map[string]bool{}, allAdopted: make(chan struct{}), burstDone: make(chan struct{}),
		adoptedAt: make([]time.Time, len(names)), condAt: make([]time.Time, len(names)), eventAt: make([]time.Time, len(names)),
		perSecond: map[int64]int{}, stormAt: make([]time.Time, len(names)), stormDone: make(chan struct{}),
		leaseStaleAt: make([]time.Time, len(names))}
	for i, n := range names {
		t.index[n] = i
		t.adopted = append(t.adopted, make(chan struct{}))
	}
	for _, d := range types {
		t.types[d.Type] = true
	}
	return t
}

func (t *tracker) run(ctx context.Context, admin kubernetes.Interface) error {
	strip := func(obj any) (any, error) {
		if m, ok := obj.(metav1.Object); ok {
			m.SetManagedFields(nil)
		}
		if n, ok := obj.(*corev1.Node); ok {
			n.Status.Images = nil
		}
		return obj, nil
	}
	// The Nodes come through a reflector of the bench's own, not an
	// informer's: that one backs off up to 30 s (and as much again of
	// jitter) after a failed watch, and after the recovery storm's outage
	// it would see the Nodes come to hold their new state up to a minute
	// late. Nodes a relist brings are seen when it brings them.
	nodeLW := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (kruntime.Object, error) {
			return admin.CoreV1().Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return admin.CoreV1().Nodes().Watch(ctx, o)
		},
	}
	nodes := &trackerStore{Store: cache.NewStore(cache.MetaNamespaceKeyFunc), t: t, strip: strip, synced: make(chan struct{})}
	b := wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 10, Cap: time.Second}
	reflector := cache.NewReflectorWithOptions(nodeLW, &corev1.Node{}, nodes, cache.ReflectorOptions{Name: "bench nodes", Backoff: &b})
	go reflector.RunWithContext(ctx)
	ef := informers.NewSharedInformerFactoryWithOptions(admin, 0, informers.WithNamespace(metav1.NamespaceDefault),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("reason", "TaskHung").String()
		}))
	events := ef.Core().V1().Events().Informer()
	events.SetTransform(strip)
	events.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { t.event(obj.(*corev1.Event)) },
		UpdateFunc: func(_, obj any) { t.event(obj.(*corev1.Event)) },
	})
	ef.Start(ctx.Done())
	select {
	case <-nodes.synced:
	case <-ctx.Done():
		return errors.New("the bench's own watch of the Nodes did not sync")
	}
	if !cache.WaitForCacheSync(ctx.Done(), events.HasSynced) {
		return errors.New("the bench's own watch of the events did not sync")
	}
	return nil
}

// trackerStore is the Nodes' reflector's store: it tells the tracker of
// every Node it is given, and keeps them stripped of what the bench does
// not read.
type trackerStore struct {
	cache.Store
	t          *tracker
	strip      func(any) (any, error)
	synced     chan struct{}
	syncedOnce sync.Once
}

func (s *trackerStore) Add(obj any) error    { return s.put(obj, false, s.Store.Add) }
func (s *trackerStore) Update(obj any) error { return s.put(obj, true, s.Store.Update) }

// Replace is a list: the Nodes it brings are told as seen, not as writes,
// or a relist of 5,000 Nodes would count as 5,000 status writes.
func (s *trackerStore) Replace(list []any, rv string) error {
	for i, obj := range list {
		list[i], _ = s.strip(obj)
		s.t.node(list[i].(*corev1.Node), false)
	}
	err := s.Store.Replace(list, rv)
	s.syncedOnce.Do(func() { close(s.synced) })
	return err
}

func (s *trackerStore) put(obj any, update bool, store func(any) error) error {
	obj, _ = s.strip(obj)
	s.t.node(obj.(*corev1.Node), update)
	return store(obj)
}

func (t *tracker) node(n *corev1.Node, update bool) {
	i, ok := t.index[n.Name]
	if !ok {
		return
	}
	now := time.Now()
	owned, burst := 0, 0
	for _, c := range n.Status.Conditions {
		if !t.types[string(c.Type)] {
			continue
		}
		owned++
		if (string(c.Type) == finding.KernelDeadlock.Type || string(c.Type) == finding.ContainerRuntimeUnresponsive.Type) && c.Status == corev1.ConditionTrue {
			burst++
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Only the agents write Nodes once they exist, so every update is one
	// of their status writes.
	if update {
		t.perSecond[now.Unix()]++
		t.writesSeen++
		if t.firstWrite.IsZero() {
			t.firstWrite = now
		}
		t.lastWrite = now
		if t.wantWrites != nil && t.writesSeen >= t.wantWritesAt {
			close(t.wantWrites)
			t.wantWrites = nil
		}
	}
	if owned == len(t.types) && t.adoptedAt[i].IsZero() {
		t.adoptedAt[i] = now
		close(t.adopted[i])
		if t.nAdopted++; t.nAdopted == len(t.adoptedAt) {
			close(t.allAdopted)
		}
	}
	for _, c := range n.Status.Conditions {
		switch {
		case string(c.Type) == finding.KubeletLeaseStale.Type && c.Status == corev1.ConditionTrue && t.leaseStaleAt[i].IsZero():
			t.leaseStaleAt[i] = now
			t.nLeaseStale++
			if t.leaseStaleMessage == "" {
				t.leaseStaleMessage = n.Name + ": " + c.Message
			}
		case t.stormMarker != "" && t.stormAt[i].IsZero() && string(c.Type) == finding.KernelDeadlock.Type &&
			c.Status == corev1.ConditionFalse && strings.Contains(c.Message, t.stormMarker):
			t.stormAt[i] = now
			if t.nStorm++; t.nStorm == len(t.stormAt) {
				close(t.stormDone)
			}
		}
	}
	if t.marker != "" && burst == 2 && t.condAt[i].IsZero() {
		for _, c := range n.Status.Conditions {
			if string(c.Type) == finding.KernelDeadlock.Type && strings.Contains(c.Message, t.marker) {
				t.condAt[i] = now
				t.nCond++
				t.checkBurstLocked()
			}
		}
	}
}

func (t *tracker) event(e *corev1.Event) {
	i, ok := t.index[e.InvolvedObject.Name]
	if !ok {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.marker != "" && t.eventAt[i].IsZero() && strings.Contains(e.Message, t.marker) {
		t.eventAt[i] = now
		t.nEvent++
		t.checkBurstLocked()
	}
}

func (t *tracker) checkBurstLocked() {
	if t.nCond == len(t.condAt) && t.nEvent == len(t.eventAt) {
		close(t.burstDone)
	}
}

func (t *tracker) countAdopted() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nAdopted
}

func (t *tracker) adoptionTime(i int) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.adoptedAt[i]
}

func (t *tracker) resetWrites() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resetWritesLocked()
}

func (t *tracker) resetWritesLocked() {
	t.perSecond, t.writesSeen = map[int64]int{}, 0
	t.firstWrite, t.lastWrite = time.Time{}, time.Time{}
}

func (t *tracker) startBurst(marker string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.marker = marker
	t.resetWritesLocked()
}

// startStorm makes the tracker look for marker in each Node's
// KernelDeadlock message.
func (t *tracker) startStorm(marker string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stormMarker = marker
}

// stormLatencies returns, for each Node that came to hold the storm's
// state, how long after back it did in milliseconds (0 for those that did
// before), and how many did before.
func (t *tracker) stormLatencies(back time.Time) (ms []float64, before int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, at := range t.stormAt {
		if at.IsZero() {
			continue
		}
		if at.Before(back) {
			before++
		}
		ms = append(ms, max(0, at.Sub(back).Seconds()*1000))
	}
	return ms, before
}

// leaseStale returns how many Nodes have shown KubeletLeaseStale=True, and
// the first one's message.
func (t *tracker) leaseStale() (int, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nLeaseStale, t.leaseStaleMessage
}

// writesReached returns a channel closed once n status writes have been
// seen since the last reset.
func (t *tracker) writesReached(n int) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.writesSeen >= n {
		close(ch)
	} else {
		t.wantWrites, t.wantWritesAt = ch, n
	}
	return ch
}

func (t *tracker) writeSpan() (first, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.firstWrite, t.lastWrite
}

// writeStats returns the most status writes seen in one second and all
// seen since the last reset.
func (t *tracker) writeStats() (peak, total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, v := range t.perSecond {
		peak = max(peak, v)
	}
	return peak, t.writesSeen
}

func (t *tracker) burstLatencies(at time.Time) (conds, events []float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.condAt {
		if !t.condAt[i].IsZero() {
			conds = append(conds, t.condAt[i].Sub(at).Seconds()*1000)
		}
		if !t.eventAt[i].IsZero() {
			events = append(events, t.eventAt[i].Sub(at).Seconds()*1000)
		}
	}
	return conds, events
}

// klogErrors counts what client-go logs as errors, above all events it
// could not write, which it reports nowhere else.
type klogErrors struct {
	n     atomic.Int64
	mu    sync.Mutex
	first map[string]int
}

func countKlogErrors() *klogErrors {
	k := &klogErrors{first: map[string]int{}}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(discard{}), zapcore.ErrorLevel)
	klog.SetLogger(zapr.NewLogger(zap.New(zapcore.RegisterHooks(core, func(e zapcore.Entry) error {
		k.n.Add(1)
		msg := e.Message
		if len(msg) > 80 {
			msg = msg[:80]
		}
		k.mu.Lock()
		if _, ok := k.first[msg]; ok || len(k.first) < 5 {
			k.first[msg]++
		}
		k.mu.Unlock()
		return nil
	}))))
	return k
}

func (k *klogErrors) count() int64 { return k.n.Load() }

func (k *klogErrors) summary() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s []string
	for m, n := range k.first {
		s = append(s, fmt.Sprintf("%dx %s", n, m))
	}
	sort.Strings(s)
	return strings.Join(s, "; ")
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// metricsSnapshot is one scrape of the API server's /metrics, flattened.
type metricsSnapshot struct {
	at      time.Time
	samples map[string][]sample
}

type sample struct {
	labels  map[string]string
	value   float64
	buckets map[float64]float64 // cumulative counts by upper bound, +Inf included
}

func scrape(ctx context.Context, client kubernetes.Interface) (*metricsSnapshot, error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	return parseMetrics(time.Now(), bytes.NewReader(raw))
}

// parseMetrics reads a Prometheus text exposition taken at at.
func parseMetrics(at time.Time, r io.Reader) (*metricsSnapshot, error) {
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	s := &metricsSnapshot{at: at, samples: map[string][]sample{}}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			x := sample{labels: map[string]string{}}
			for _, p := range m.GetLabel() {
				x.labels[p.GetName()] = p.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				x.value = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				x.value = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				x.value = float64(h.GetSampleCount())
				x.buckets = map[float64]float64{math.Inf(1): float64(h.GetSampleCount())}
				for _, b := range h.GetBucket() {
					x.buckets[b.GetUpperBound()] = float64(b.GetCumulativeCount())
				}
			default:
				continue
			}
			s.samples[name] = append(s.samples[name], x)
		}
	}
	return s, nil
}

func (s *metricsSnapshot) sum(name string, match func(map[string]string) bool) float64 {
	var v float64
	for _, x := range s.samples[name] {
		if match == nil || match(x.labels) {
			v += x.value
		}
	}
	return v
}

func (s *metricsSnapshot) hist(name string, match func(map[string]string) bool) map[float64]float64 {
	out := map[float64]float64{}
	for _, x := range s.samples[name] {
		if x.buckets != nil && (match == nil || match(x.labels)) {
			for le, v := range x.buckets {
				out[le] += v
			}
		}
	}
	return out
}

// quantile estimates a quantile of what a histogram observed since prev,
// interpolating within a bucket as Prometheus's histogram_quantile does.
func (s *metricsSnapshot) quantile(prev *metricsSnapshot, name string, q float64, match func(map[string]string) bool) float64 {
	now, then := s.hist(name, match), prev.hist(name, match)
	var bounds []float64
	for le := range now {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	total := now[math.Inf(1)] - then[math.Inf(1)]
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		c := now[le] - then[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if c == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(c-below)
		}
		lower, below = le, c
	}
	return lower
}

// anyRequest matches the short requests of the API: not watches or
// proxied connections, which last as long as they are open, and not
// non-resource paths such as the bench's own /metrics scrapes.
func anyRequest(l map[string]string) bool {
	switch l["verb"] {
	case "WATCH", "WATCHLIST", "CONNECT":
		return false
	}
	return l["resource"] != ""
}

func statusPatch(l map[string]string) bool {
	return l["verb"] == "PATCH" && l["resource"] == "nodes" && l["subresource"] == "status"
}

func eventPost(l map[string]string) bool {
	return l["verb"] == "POST" && l["resource"] == "events"
}

func (s *metricsSnapshot) latencyP99(prev *metricsSnapshot, match func(map[string]string) bool) float64 {
	return s.quantile(prev, "apiserver_request_duration_seconds", 0.99, match)
}

func (s *metricsSnapshot) latencyCount(prev *metricsSnapshot, match func(map[string]string) bool) float64 {
	return s.sum("apiserver_request_duration_seconds", match) - prev.sum("apiserver_request_duration_seconds", match)
}

// watches counts the watches open now.
func (s *metricsSnapshot) watches() float64 {
	return s.sum("apiserver_longrunning_requests", func(l map[string]string) bool {
		return l["verb"] == "WATCH" || l["verb"] == "WATCHLIST"
	})
}

// requestCounts are the API server's request counts between two scrapes.
// Status and event writes count those that succeeded; a request rejected
// with 429 and retried by client-go counts once per attempt in total.
type requestCounts struct {
	total, writes, reads, watchRequests float64
	status, events                      float64
	code429, failed                     float64
	kinds                               map[string]float64
}

func (c requestCounts) byKind() string {
	var keys []string
	for k := range c.kinds {
		if c.kinds[k] >= 0.5 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return c.kinds[keys[i]] > c.kinds[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%.0f", k, c.kinds[k]))
	}
	return strings.Join(parts, " ")
}

// requests counts apiserver_request_total since prev. Total counts the
// short requests (anyRequest); watch requests are counted apart, when
// they end.
func (s *metricsSnapshot) requests(prev *metricsSnapshot) requestCounts {
	before := map[string]float64{}
	for _, x := range prev.samples["apiserver_request_total"] {
		before[seriesKey(x.labels)] = x.value
	}
	c := requestCounts{kinds: map[string]float64{}}
	for _, x := range s.samples["apiserver_request_total"] {
		l := x.labels
		d := x.value - before[seriesKey(l)]
		if d <= 0 {
			continue
		}
		kind := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			kind += "/" + l["subresource"]
		}
		code, _ := strconv.Atoi(l["code"])
		if code >= 300 {
			kind += " " + l["code"]
		}
		if l["verb"] == "WATCH" || l["verb"] == "WATCHLIST" {
			c.watchRequests += d
			c.kinds[kind] += d
			continue
		}
		if !anyRequest(l) {
			continue
		}
		c.total += d
		c.kinds[kind] += d
		switch l["verb"] {
		case "GET", "LIST":
			c.reads += d
		default:
			c.writes += d
		}
		if code == 429 {
			c.code429 += d
		}
		if code >= 300 {
			c.failed += d
			continue
		}
		if statusPatch(l) {
			c.status += d
		}
		if eventPost(l) || (l["resource"] == "events" && l["verb"] == "PATCH") {
			c.events += d
		}
	}
	return c
}

func seriesKey(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x00")
}

// topPriorityLevel names the API Priority and Fairness level that
// dispatched the most requests since prev, other than the exempt one the
// bench's admin client uses.
func (s *metricsSnapshot) topPriorityLevel(prev *metricsSnapshot) string {
	delta := map[string]float64{}
	for _, x := range s.samples["apiserver_flowcontrol_dispatched_requests_total"] {
		delta[x.labels["priority_level"]] += x.value
	}
	for _, x := range prev.samples["apiserver_flowcontrol_dispatched_requests_total"] {
		delta[x.labels["priority_level"]] -= x.value
	}
	best, bestN := "", 0.0
	for l, v := range delta {
		if l != "exempt" && v > bestN {
			best, bestN = l, v
		}
	}
	return best
}

// childPid finds a process this one started by its command name.
func childPid(comm string) int {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) > 1 && s[lp+1:rp] == comm {
			if ppid, _ := strconv.Atoi(f[1]); ppid == self {
				return pid
			}
		}
	}
	return 0
}

// selfMemory returns this process's RSS and heap in use, in bytes, and its
// goroutines.
func selfMemory() (rss, heap float64, goroutines int) {
	_, rssMiB := procStat(os.Getpid())
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return rssMiB * (1 << 20), float64(m.HeapInuse), runtime.NumGoroutine()
}

// connectionsTo counts this process's established TCP connections to port.
func connectionsTo(port int) int {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "01" { // 01: ESTABLISHED
				continue
			}
			_, remote, _ := strings.Cut(f[2], ":")
			if p, err := strconv.ParseInt(remote, 16, 32); err == nil && int(p) == port && inodes[f[9]] {
				n++
			}
		}
	}
	return n
}
