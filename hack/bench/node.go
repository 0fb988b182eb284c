package main

// The shipped pod on the real node (issue #17 part 4): the bench starts the
// one-node cluster of internal/testnode (a real kubelet, containerd, runc
// and journald), deploys deploy/ as shipped with nodeguard's own image, and
// reads the pod's own cgroup on the host, first while nothing happens, then
// during a storm of real memory-cgroup OOM kills. The kills are the
// kernel's own: processes in small memory cgroups of the bench's allocate
// past their limit, so the kernel writes its OOM reports as it does on a
// node whose pods run out of memory. Nothing is written to /dev/kmsg.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/nodeguard/nodeguard/internal/testnode"
)

var (
	nodeIdle     = flag.Duration("node-idle", 10*time.Minute, "node section: how long the deployed pod's cgroup is read while idle")
	nodeStorm    = flag.Duration("node-storm", 2*time.Minute, "node section: how long the OOM-kill storm lasts")
	nodeKillRate = flag.Float64("node-kill-rate", 75, "node section: OOM kills a second the storm aims at (75: the 4,500 a minute of kubernetes/node-problem-detector#282)")
	nodeSample   = flag.Duration("node-sample", 2*time.Second, "node section: how often the pod's cgroup is read")
	// The kernel's side alone: the rate this machine reaches and what the
	// kernel prints, with no node or agent to share the CPUs with.
	nodeStormAlone = flag.Bool("node-storm-alone", false, "node section: only the OOM storm, with no node or agent")
)

const (
	nodeImageRef = "docker.io/nodeguard/nodeguard:bench"
	// The agent's /metrics: the pod runs on the host's network.
	nodeMetricsURL = "http://127.0.0.1:9102/metrics"
	// stormCgroups is how many memory cgroups the storm's processes take
	// turns in: one process each at a time, so that each kill is one
	// process's, and enough that one slow to die does not hold the rate.
	stormCgroups = 64
	// stormLimit is each storm cgroup's memory limit: small, so that a
	// process passes it within a few milliseconds of starting.
	stormLimit = 4 << 20
	// stormPrefix names the storm's cgroups, with the bench's pid after it.
	stormPrefix = "nodeguard-bench-oom-"
	memoryRoot  = "/sys/fs/cgroup/memory"
)

// nodeSection is the `node` section. Everything it starts (the node, the
// storm's cgroups and processes) is stopped and removed on return, on an
// error and on SIGINT or SIGTERM as well.
func nodeSection(dir string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if _, err := os.Stat(filepath.Join(memoryRoot, "memory.limit_in_bytes")); err != nil {
		out("node", "%q", "skipped: no cgroup v1 memory hierarchy at "+memoryRoot+" (the node's kubelet runs on cgroup v1 here)")
		return nil
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }
	if *nodeStormAlone {
		return oomStorm(ctx, nil, nil, logf)
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	n, err := testnode.Start(ctx, testnode.Options{Logf: logf})
	if errors.Is(err, testnode.ErrSkip) {
		out("node", "%q", "skipped: "+err.Error())
		return nil
	}
	if err != nil {
		return fmt.Errorf("starting the node: %w", err)
	}
	defer n.Stop()
	if !n.Journald {
		return fmt.Errorf("the node runs no systemd-journald, and deploy/ reads the kernel log from the journal")
	}
	pod, err := deployShipped(ctx, n, repo, dir, logf)
	if err != nil {
		return err
	}
	cg, err := podCgroupsOf(n, pod)
	if err != nil {
		return err
	}
	owned, err := waitOwnedConditions(ctx, n)
	if err != nil {
		return err
	}
	out("node_conditions_on_node", "%d", len(owned))
	// Past start-up: its writes, and the agent giving back the pages of its
	// binary that only start-up used (30 s in).
	logf("conditions on the Node; settling %s before the idle window", *settle)
	if err := sleepCtx(ctx, *settle); err != nil {
		return err
	}
	out("node_pod_memory_limit_mib", "%.0f", mib(cg.limit()))
	out("node_pod_cpu_limit_cores", "%.2f", cg.cpuLimit())

	logf("idle for %s", *nodeIdle)
	restarts0 := restartCount(ctx, n, pod)
	idle, err := cg.watch(ctx, *nodeIdle, nil)
	if err != nil {
		return err
	}
	idle.print("node_idle", cg.limit())

	logf("OOM storm at %.0f kills a second for %s", *nodeKillRate, *nodeStorm)
	if err := oomStorm(ctx, n, cg, logf); err != nil {
		return err
	}
	out("node_pod_restarts", "%d", restartCount(ctx, n, pod)-restarts0)
	return nil
}

// deployShipped builds nodeguard's image, imports it into the node and
// applies deploy/ with only the image reference changed, then returns the
// DaemonSet's pod once it is Ready.
func deployShipped(ctx context.Context, n *testnode.Node, repo, dir string, logf func(string, ...any)) (*corev1.Pod, error) {
	logf("building and importing %s", nodeImageRef)
	if err := n.ImportNodeguard(ctx, repo, nodeImageRef); err != nil {
		return nil, err
	}
	overlay := filepath.Join(dir, "node-overlay")
	if err := testnode.WriteOverlay(overlay, repo, nodeImageRef); err != nil {
		return nil, err
	}
	if o, err := n.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		return nil, fmt.Errorf("kubectl apply -k deploy/: %w\n%s", err, o)
	}
	if o, err := n.Kubectl(ctx, "-n", "nodeguard", "rollout", "status", "daemonset/nodeguard", "--timeout=4m"); err != nil {
		return nil, fmt.Errorf("the DaemonSet did not become Ready: %w\n%s", err, o)
	}
	pods, err := n.Client.CoreV1().Pods("nodeguard").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.Name).String()})
	if err != nil {
		return nil, fmt.Errorf("listing the DaemonSet's pods: %w", err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			logf("pod %s runs on %s", p.Name, n.Name)
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running nodeguard pod on %s", n.Name)
}

// waitOwnedConditions waits until every condition type the agent says it
// owns (its nodeguard_condition series) is on the Node, and returns them.
func waitOwnedConditions(ctx context.Context, n *testnode.Node) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var missing []string
	for {
		var owned []string
		if m, err := agentMetrics(ctx); err == nil {
			for _, s := range m.samples["nodeguard_condition"] {
				if c := s.labels["condition"]; c != "" && !slices.Contains(owned, c) {
					owned = append(owned, c)
				}
			}
		}
		missing = missing[:0]
		if node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err == nil && len(owned) > 0 {
			for _, typ := range owned {
				found := false
				for _, c := range node.Status.Conditions {
					found = found || string(c.Type) == typ
				}
				if !found {
					missing = append(missing, typ)
				}
			}
			if len(missing) == 0 {
				return owned, nil
			}
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, fmt.Errorf("waiting for the agent's conditions on the Node (missing %v): %w", missing, err)
		}
	}
}

func restartCount(ctx context.Context, n *testnode.Node, pod *corev1.Pod) int {
	p, err := n.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil || len(p.Status.ContainerStatuses) == 0 {
		return 0
	}
	return int(p.Status.ContainerStatuses[0].RestartCount)
}

func agentMetrics(ctx context.Context) (*metricsSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, nodeMetricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the agent's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading the agent's metrics: %s", resp.Status)
	}
	return parseMetrics(time.Now(), resp.Body)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func mib(bytes float64) float64 { return bytes / (1 << 20) }

// podCgroups are the pod's own cgroups on the host, pause container
// included, which is what its limits are enforced on.
type podCgroups struct{ cpuacct, cpu, memory string }

func podCgroupsOf(n *testnode.Node, pod *corev1.Pod) (*podCgroups, error) {
	var cg podCgroups
	for _, h := range []struct {
		name string
		dst  *string
	}{{"cpuacct", &cg.cpuacct}, {"cpu", &cg.cpu}, {"memory", &cg.memory}} {
		p, err := n.PodCgroup(h.name, string(pod.UID))
		if err != nil {
			return nil, err
		}
		*h.dst = p
	}
	return &cg, nil
}

func readNumber(path string) float64 {
	b, _ := os.ReadFile(path)
	v, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	return v
}

// readKeyed reads a file of "key value" lines (memory.stat, cpu.stat).
func readKeyed(path string) map[string]float64 {
	b, _ := os.ReadFile(path)
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			m[k], _ = strconv.ParseFloat(v, 64)
		}
	}
	return m
}

func (cg *podCgroups) limit() float64 {
	return readNumber(filepath.Join(cg.memory, "memory.limit_in_bytes"))
}

func (cg *podCgroups) cpuLimit() float64 {
	quota, period := readNumber(filepath.Join(cg.cpu, "cpu.cfs_quota_us")), readNumber(filepath.Join(cg.cpu, "cpu.cfs_period_us"))
	if quota <= 0 || period <= 0 {
		return 0
	}
	return quota / period
}

// cgroupSample is one reading of the pod's cgroups.
type cgroupSample struct {
	at    time.Time
	cpuNs float64
	// usage counts the page cache charged to the pod (the journal's pages
	// the agent reads); the working set leaves out the inactive file pages,
	// which the kernel reclaims first, as the kubelet and cAdvisor count it
	// for eviction; rss is the anonymous memory alone.
	usage, workingSet, rss float64
	throttled, throttledNs float64
}

func (cg *podCgroups) read() cgroupSample {
	usage := readNumber(filepath.Join(cg.memory, "memory.usage_in_bytes"))
	st := readKeyed(filepath.Join(cg.memory, "memory.stat"))
	cpu := readKeyed(filepath.Join(cg.cpu, "cpu.stat"))
	return cgroupSample{
		at:          time.Now(),
		cpuNs:       readNumber(filepath.Join(cg.cpuacct, "cpuacct.usage")),
		usage:       usage,
		workingSet:  max(0, usage-st["total_inactive_file"]),
		rss:         st["total_rss"],
		throttled:   cpu["nr_throttled"],
		throttledNs: cpu["throttled_time"],
	}
}

// phase is one window's readings of the pod's cgroups.
type phase struct {
	samples []cgroupSample
	// maxUsage is the kernel's own peak of usage within the window
	// (memory.max_usage_in_bytes), which catches what falls between samples.
	maxUsage float64
}

// watch reads the pod's cgroups every -node-sample for d, calling each
// (when not nil) after every reading, and returns the window's readings.
func (cg *podCgroups) watch(ctx context.Context, d time.Duration, each func(cgroupSample)) (*phase, error) {
	peak := filepath.Join(cg.memory, "memory.max_usage_in_bytes")
	// The peak from here on.
	if err := os.WriteFile(peak, []byte("0"), 0); err != nil {
		return nil, fmt.Errorf("resetting the pod's memory peak: %w", err)
	}
	p := &phase{samples: []cgroupSample{cg.read()}}
	for end := time.Now().Add(d); time.Now().Before(end); {
		if err := sleepCtx(ctx, min(*nodeSample, time.Until(end))); err != nil {
			return nil, err
		}
		s := cg.read()
		p.samples = append(p.samples, s)
		if each != nil {
			each(s)
		}
	}
	p.maxUsage = readNumber(peak)
	return p, nil
}

// cpuByMinute is the CPU ms of each whole minute of the window, from the
// samples nearest its ends, as "ms1,ms2,...": start-up's tail, or a
// periodic probe, shows as a minute unlike the others.
func (p *phase) cpuByMinute() string {
	var s []string
	first := p.samples[0]
	from := first
	for _, x := range p.samples[1:] {
		if x.at.Sub(first.at) >= time.Duration(len(s)+1)*time.Minute-*nodeSample/2 {
			s = append(s, fmt.Sprintf("%.0f", (x.cpuNs-from.cpuNs)/1e6))
			from = x
		}
	}
	return strings.Join(s, ",")
}

func (p *phase) print(prefix string, limit float64) {
	first, last := p.samples[0], p.samples[len(p.samples)-1]
	wall := last.at.Sub(first.at)
	cpu := (last.cpuNs - first.cpuNs) / 1e9
	out(prefix+"_seconds", "%.0f", wall.Seconds())
	out(prefix+"_samples", "%d", len(p.samples))
	out(prefix+"_cpu_ms_per_minute", "%.1f", cpu*1000/wall.Minutes())
	out(prefix+"_cpu_cores", "%.4f", cpu/wall.Seconds())
	out(prefix+"_cpu_ms_by_minute", "%q", p.cpuByMinute())
	out(prefix+"_cpu_throttled_periods", "%.0f", last.throttled-first.throttled)
	out(prefix+"_cpu_throttled_ms", "%.0f", (last.throttledNs-first.throttledNs)/1e6)
	for _, m := range []struct {
		name string
		get  func(cgroupSample) float64
	}{
		{"memory_usage", func(s cgroupSample) float64 { return s.usage }},
		{"working_set", func(s cgroupSample) float64 { return s.workingSet }},
		{"rss", func(s cgroupSample) float64 { return s.rss }},
	} {
		var v []float64
		for _, s := range p.samples {
			v = append(v, m.get(s))
		}
		med, peak := median(v), slices.Max(v)
		out(prefix+"_"+m.name+"_mib_median", "%.1f", mib(med))
		out(prefix+"_"+m.name+"_mib_peak", "%.1f", mib(peak))
		out(prefix+"_"+m.name+"_percent_of_limit_median", "%.1f", 100*med/limit)
		out(prefix+"_"+m.name+"_percent_of_limit_peak", "%.1f", 100*peak/limit)
	}
	out(prefix+"_memory_usage_mib_kernel_peak", "%.1f", mib(p.maxUsage))
	out(prefix+"_memory_usage_kernel_peak_percent_of_limit", "%.1f", 100*p.maxUsage/limit)
}

// oomStorm kills processes in memory cgroups of its own at -node-kill-rate
// for -node-storm while it reads the pod's cgroups, the kernel log and the
// agent's metrics, and prints what each shows; with no node (n nil), only
// what the kernel shows.
func oomStorm(ctx context.Context, n *testnode.Node, cg *podCgroups, logf func(string, ...any)) error {
	reapStormCgroups(logf)
	s, err := newStorm()
	if err != nil {
		return err
	}
	defer s.remove()
	klog, err := readKernelLog("oom_memcg=/" + filepath.Base(s.root) + "/")
	if err != nil {
		return err
	}
	defer klog.stop()
	agentOOMs := func(m *metricsSnapshot) float64 {
		return m.sum("nodeguard_events_total", func(l map[string]string) bool { return l["reason"] == "OOMKilling" })
	}
	var m0 *metricsSnapshot
	var base float64
	if n != nil {
		if m0, err = agentMetrics(ctx); err != nil {
			return err
		}
		base = agentOOMs(m0)
	}
	stormStart := time.Now()
	host0 := hostBusySeconds()

	killCtx, stopKills := context.WithCancel(ctx)
	killsDone := make(chan struct{})
	go func() { defer close(killsDone); s.run(killCtx, *nodeKillRate) }()
	defer func() { stopKills(); <-killsDone }()

	// The agent's backlog through the storm: kills the kernel has logged
	// that the agent has not yet counted.
	var backlog, spool []float64
	var storm *phase
	if n != nil {
		storm, err = cg.watch(ctx, *nodeStorm, func(cgroupSample) {
			if m, err := agentMetrics(ctx); err == nil {
				backlog = append(backlog, float64(klog.read(s.ours).killedAll)-(agentOOMs(m)-base))
				spool = append(spool, m.sum("nodeguard_event_spool_records", nil))
			}
		})
	} else {
		err = sleepCtx(ctx, *nodeStorm)
	}
	if err != nil {
		return err
	}
	// The window is the time starts were made; the last ones' deaths
	// follow within milliseconds and are counted.
	stormEnd := time.Now()
	hostBusy := hostBusySeconds() - host0
	stopKills()
	waitStop := time.Now()
	<-killsDone
	logf("the storm's last processes ended %.0f ms after its end", time.Since(waitStop).Seconds()*1000)
	// The last kills' lines.
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	k := klog.read(s.ours)
	minutes := stormEnd.Sub(stormStart).Minutes()
	st := s.counts()
	out("node_storm_kill_seconds", "%.1f", stormEnd.Sub(stormStart).Seconds())
	out("node_storm_kill_rate_target_per_minute", "%.0f", *nodeKillRate*60)
	out("node_storm_processes_started", "%d", st.started)
	out("node_storm_processes_oom_killed", "%d", st.killed)
	out("node_storm_processes_not_killed", "%d", st.other)
	out("node_storm_starts_skipped_no_free_cgroup", "%d", st.skipped)
	out("node_storm_kills_per_minute", "%.0f", float64(st.killed)/minutes)
	// The whole machine's CPU through the storm (its processes, the
	// kernel's OOM handling, journald, the node, and whatever else shares
	// the machine), for what the storm left to the agent.
	out("node_storm_host_cpu_cores_busy", "%.2f", hostBusy/stormEnd.Sub(stormStart).Seconds())
	// From the kernel log, as the kernel printed it: the full report
	// (dump_header: the header, stack, memory state, task list and the
	// oom-kill: summary naming the memory cgroup) is rate-limited by
	// oom_kill.c's oom_rs (10 per 5 s), the "Killed process" line is not.
	out("node_storm_kernel_killed_process_lines", "%d", k.killedOurs)
	out("node_storm_kernel_killed_process_lines_per_minute", "%.0f", float64(k.killedOurs)/minutes)
	out("node_storm_kernel_killed_process_lines_by_minute", "%q", byMinute(stormStart, k.oursAt))
	out("node_storm_kernel_full_reports", "%d", k.fullReports)
	out("node_storm_kernel_full_reports_per_minute", "%.1f", float64(k.fullReports)/minutes)
	out("node_storm_kernel_full_reports_by_minute", "%q", byMinute(stormStart, k.fullAt))
	out("node_storm_kernel_records", "%d", k.records)
	out("node_storm_kernel_records_per_minute", "%.0f", float64(k.records)/minutes)
	out("node_storm_kernel_other_kills", "%d", k.killedAll-k.killedOurs)
	out("node_storm_kernel_log_overruns", "%d", k.overruns)
	if n == nil {
		return nil
	}
	storm.print("node_storm", cg.limit())

	// Whether the agent kept up: it counts every OOM kill it reads (the
	// event metric counts each line, whatever reaches the API server).
	// Then how long after the storm it had read them all.
	var m1 *metricsSnapshot
	caughtUp := -1.0
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if m1, err = agentMetrics(ctx); err == nil && agentOOMs(m1)-base >= float64(k.killedAll) {
			caughtUp = time.Since(stormEnd).Seconds()
			break
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	if m1 == nil {
		return fmt.Errorf("the agent's metrics after the storm: %w", err)
	}
	out("node_storm_agent_oom_kills_counted", "%.0f", agentOOMs(m1)-base)
	if len(backlog) > 0 {
		out("node_storm_agent_backlog_kills_max", "%.0f", slices.Max(backlog))
		out("node_storm_agent_backlog_kills_median", "%.0f", median(backlog))
	}
	if caughtUp >= 0 {
		out("node_storm_agent_caught_up_seconds_after_storm", "%.1f", caughtUp)
	} else {
		out("node_storm_agent_caught_up_seconds_after_storm", "%q", "not within 120 s")
	}
	delta := func(name string, match func(map[string]string) bool) float64 {
		return m1.sum(name, match) - m0.sum(name, match)
	}
	oom := func(l map[string]string) bool { return l["reason"] == "OOMKilling" }
	out("node_storm_agent_events_suppressed", "%.0f", delta("nodeguard_events_suppressed_total", nil))
	out("node_storm_agent_events_held", "%.0f", delta("nodeguard_events_held_total", oom))
	out("node_storm_agent_event_writes", "%.0f", delta("nodeguard_event_writes_total", func(l map[string]string) bool { return l["result"] == "success" }))
	out("node_storm_agent_event_write_errors", "%.0f", delta("nodeguard_event_writes_total", func(l map[string]string) bool { return l["result"] != "success" }))
	out("node_storm_agent_event_spool_records_max", "%.0f", slices.Max(append(spool, m1.sum("nodeguard_event_spool_records", nil))))
	out("node_storm_agent_check_errors", "%.0f", delta("nodeguard_check_errors_total", nil))
	out("node_storm_agent_kmsg_overruns", "%.0f", delta("nodeguard_kmsg_overruns_total", nil))

	// What reached the Node: the OOMKilling Events, each with its count
	// (client-go's aggregation folds repeats), and the suppression summary,
	// once the writes under way have landed.
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return err
	}
	evs, err := n.Client.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", n.Name).String()})
	if err != nil {
		return fmt.Errorf("listing the Node's events: %w", err)
	}
	var objects, count, suppressed int
	for _, e := range evs.Items {
		if e.LastTimestamp.Time.Before(stormStart.Add(-time.Second)) && e.EventTime.Time.Before(stormStart.Add(-time.Second)) {
			continue
		}
		switch e.Reason {
		case "OOMKilling":
			objects++
			count += int(max(e.Count, 1))
		case "EventsSuppressed":
			suppressed++
		}
	}
	out("node_storm_oomkilling_events_on_node", "%d", objects)
	out("node_storm_oomkilling_event_count_on_node", "%d", count)
	out("node_storm_events_suppressed_events_on_node", "%d", suppressed)
	return nil
}

// hostBusySeconds is the CPU time of every CPU of the machine not idle or
// waiting for I/O, from /proc/stat (USER_HZ ticks).
func hostBusySeconds() float64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f {
		// user nice system idle iowait irq softirq steal
		if i == 0 || i == 4 || i == 5 || i > 8 {
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / 100
}

// byMinute counts times in each whole or partial minute from start, as
// "n1,n2,...".
func byMinute(start time.Time, times []time.Time) string {
	var bins []int
	for _, t := range times {
		i := max(0, int(t.Sub(start)/time.Minute))
		for len(bins) <= i {
			bins = append(bins, 0)
		}
		bins[i]++
	}
	s := make([]string, len(bins))
	for i, b := range bins {
		s[i] = strconv.Itoa(b)
	}
	return strings.Join(s, ",")
}

// killerPool runs the processes the OOM killer ends, one at a time in each of
// its memory cgroups.
type killerPool struct {
	root string
	free chan int
	wg   sync.WaitGroup

	mu                              sync.Mutex
	started, killed, other, skipped int
	pids                            map[int]bool
}

type stormCounts struct{ started, killed, other, skipped int }

func newStorm() (*killerPool, error) {
	s := &killerPool{root: filepath.Join(memoryRoot, stormPrefix+strconv.Itoa(os.Getpid())), free: make(chan int, stormCgroups), pids: map[int]bool{}}
	if err := os.Mkdir(s.root, 0o755); err != nil {
		return nil, fmt.Errorf("making the storm's cgroup: %w", err)
	}
	for i := range stormCgroups {
		dir := filepath.Join(s.root, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			s.remove()
			return nil, fmt.Errorf("making a storm cgroup: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.Itoa(stormLimit)), 0); err != nil {
			s.remove()
			return nil, fmt.Errorf("limiting a storm cgroup: %w", err)
		}
		s.free <- i
	}
	return s, nil
}

// hogScript moves its shell into the cgroup whose cgroup.procs is $1 and
// becomes tail reading /dev/zero: one line that never ends, which tail
// keeps growing in memory until the OOM killer ends it.
const hogScript = `echo $$ > "$1" && exec tail /dev/zero`

// run starts a process every 1/rate s until ctx ends, in a free cgroup,
// and waits for the last ones. A start with no cgroup free is skipped, so
// the rate is what the machine reached, not a queue.
func (s *killerPool) run(ctx context.Context, rate float64) {
	defer s.wg.Wait()
	every := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for {
		next = next.Add(every)
		if sleepCtx(ctx, time.Until(next)) != nil {
			return
		}
		select {
		case i := <-s.free:
			s.start(i)
		default:
			s.mu.Lock()
			s.skipped++
			s.mu.Unlock()
		}
	}
}

func (s *killerPool) start(i int) {
	procs := filepath.Join(s.root, strconv.Itoa(i), "cgroup.procs")
	cmd := exec.Command("/bin/sh", "-c", hogScript, "nodeguard-bench-hog", procs)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.mu.Lock()
		s.other++
		s.mu.Unlock()
		s.free <- i
		return
	}
	s.mu.Lock()
	s.started++
	s.pids[cmd.Process.Pid] = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// One that outlives this has not met its limit: it is killed and
		// not counted as the OOM killer's.
		timeout := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
		cmd.Wait()
		oom := timeout.Stop()
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		s.mu.Lock()
		if oom && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			s.killed++
		} else {
			s.other++
		}
		s.mu.Unlock()
		s.free <- i
	}()
}

// ours says whether pid is one of the storm's processes.
func (s *killerPool) ours(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pids[pid]
}

func (s *killerPool) counts() stormCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return stormCounts{s.started, s.killed, s.other, s.skipped}
}

func (s *killerPool) remove() { removeStormCgroup(s.root) }

// removeStormCgroup kills what is left in a storm cgroup tree and removes
// it, children first.
func removeStormCgroup(root string) {
	for try := 0; try < 100; try++ {
		dirs, _ := filepath.Glob(filepath.Join(root, "*", "cgroup.procs"))
		left := 0
		for _, p := range dirs {
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			// A memory cgroup whose last task just died may take a
			// moment to be removable.
			if err := syscall.Rmdir(filepath.Dir(p)); err != nil && !errors.Is(err, syscall.ENOENT) {
				left++
			}
		}
		if left == 0 {
			if err := syscall.Rmdir(root); err == nil || errors.Is(err, syscall.ENOENT) {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "bench: could not remove the storm's cgroup %s\n", root)
}

// reapStormCgroups removes the storm cgroups of bench runs that died.
func reapStormCgroups(logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(memoryRoot, stormPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), stormPrefix))
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		logf("removing %s, left by a dead run", d)
		removeStormCgroup(d)
	}
}

// kernelLog reads /dev/kmsg from its end, as a reader (nothing is written
// to it), and counts the OOM reports of the storm's cgroups.
type kernelLog struct {
	f     *os.File
	memcg string
	done  chan struct{}

	mu     sync.Mutex
	counts kernelCounts
	// killed are the "Killed process" lines, matched against the storm's
	// own pids when read; full the full reports' summaries.
	killed []killLine
	full   []time.Time
}

type killLine struct {
	pid int
	at  time.Time
}

type kernelCounts struct {
	// records is every record read; fullReports the oom-kill: summaries
	// naming the storm's cgroups, the last line of each full report;
	// killedAll the "Killed process" lines, killedOurs those of processes
	// in the storm's cgroups.
	records, fullReports, killedAll, killedOurs, overruns int
	// The storm's kill lines and full reports, each a time the bench read
	// it, for counts by minute.
	oursAt, fullAt []time.Time
}

// killedProcess is the kernel's line for each kill, rate-limited or not;
// oomSummary the full report's one-line summary, which names the victim's
// pid and memory cgroup.
var (
	killedProcess = regexp.MustCompile(`Killed process (\d+) `)
	oomSummary    = regexp.MustCompile(`^oom-kill:constraint=`)
)

func readKernelLog(memcg string) (*kernelLog, error) {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		return nil, fmt.Errorf("reading the kernel log: %w", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("seeking to the kernel log's end: %w", err)
	}
	k := &kernelLog{f: f, memcg: memcg, done: make(chan struct{})}
	go k.loop()
	return k, nil
}

// classifyRecord reads one /dev/kmsg record (PRIO,SEQ,USEC,FLAGS;TEXT and
// continuation lines): the pid of its "Killed process" line, if it is one,
// and whether it is the summary line that ends a full report of a kill in
// a cgroup under memcg.
func classifyRecord(rec, memcg string) (killedPID int, fullReport bool) {
	msg := rec
	if _, after, ok := strings.Cut(rec, ";"); ok {
		msg, _, _ = strings.Cut(after, "\n")
	}
	if m := killedProcess.FindStringSubmatch(msg); m != nil {
		killedPID, _ = strconv.Atoi(m[1])
	}
	return killedPID, oomSummary.MatchString(msg) && strings.Contains(msg, memcg)
}

func (k *kernelLog) loop() {
	defer close(k.done)
	buf := make([]byte, 16<<10)
	for {
		n, err := k.f.Read(buf)
		if errors.Is(err, syscall.EPIPE) {
			// The ring wrapped before this reader: records were lost.
			k.mu.Lock()
			k.counts.overruns++
			k.mu.Unlock()
			continue
		}
		if err != nil {
			return
		}
		pid, full := classifyRecord(string(buf[:n]), k.memcg)
		k.mu.Lock()
		k.counts.records++
		if pid > 0 {
			k.killed = append(k.killed, killLine{pid, time.Now()})
			k.counts.killedAll++
		}
		if full {
			k.counts.fullReports++
			k.full = append(k.full, time.Now())
		}
		k.mu.Unlock()
	}
}

// read returns the counts so far, those of the storm's processes (ours)
// among them.
func (k *kernelLog) read(ours func(pid int) bool) kernelCounts {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.counts
	for _, l := range k.killed {
		if ours(l.pid) {
			c.killedOurs++
			c.oursAt = append(c.oursAt, l.at)
		}
	}
	c.fullAt = slices.Clone(k.full)
	return c
}

func (k *kernelLog) stop() {
	k.f.Close()
	select {
	case <-k.done:
	case <-time.After(2 * time.Second):
	}
}
