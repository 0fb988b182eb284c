// Command bench measures nodeguard on this machine and prints one
// name=value line per figure: the rule engine's cost per line through
// `nodeguard replay`, the agent's idle footprint against a real
// kube-apiserver, kmsg-to-API-server detection latency, and the API load it
// makes while healthy and while a condition flaps. Run it through
// `make bench` (root, for /dev/kmsg). Figures are medians of several runs;
// the machine is shared, so compare figures from one run. `-sections node`
// (`make bench-node`) measures the shipped pod on a real node instead
// (node.go).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/nodeguard/nodeguard/internal/benchlog"
	"github.com/nodeguard/nodeguard/internal/testcluster"
	"github.com/nodeguard/nodeguard/internal/testcontainerd"
)

var (
	agentBin = flag.String("agent", "bin/nodeguard", "the nodeguard binary to measure")
	lines    = flag.Int("lines", 500000, "lines in the generated kernel log")
	runs     = flag.Int("runs", 3, "runs of the replay measurement (median reported)")
	idle     = flag.Duration("idle", 60*time.Second, "how long the idle footprint is measured")
	settle   = flag.Duration("settle", 40*time.Second, "how long after start the idle footprint's window opens")
	trials   = flag.Int("trials", 20, "detection latency trials")
	flap     = flag.Duration("flap", 30*time.Second, "how long a condition flaps every 100 ms")

	scaleNodes       = flag.Int("scale-nodes", 1000, "simulated nodes for the scale figures (0 skips them)")
	scaleWindow      = flag.Duration("scale-window", 60*time.Second, "how long the scale figures' steady state is measured")
	scaleHeartbeat   = flag.Duration("scale-heartbeat", 0, "the simulated agents' status heartbeat (0: the production default)")
	scaleConcurrency = flag.Int("scale-concurrency", 50, "simulated agents starting at once (0: all)")
	scaleDeploy      = flag.String("scale-deploy", "deploy/base", "manifests whose namespace, ServiceAccount, RBAC and admission policies the simulated agents get")
	scaleOutage      = flag.Duration("scale-outage", 2*time.Minute, "the recovery storm's API server outage, after the scale figures' burst (0 skips the storm)")
	scaleStormLease  = flag.Int("scale-storm-lease-nodes", 0, "nodes of the recovery storm that get a simulated kubelet renewing their Lease and run the lease check (0: all)")
	onlyScale        = flag.Bool("only-scale", false, "measure only the scale figures")
	onlyReplay       = flag.Bool("only-replay", false, "measure only the replay figures (no API server)")
	baselineAgent    = flag.String("baseline-agent", "", "another nodeguard binary whose replay runs alternate with -agent's, for a before/after ratio from one run")
	sections         = flag.String("sections", "replay,kernlog,live,kmsg,scale", "the measurements to make, comma-separated; not among the defaults: node (the shipped pod on the real node, `make bench-node`) and idle (only the idle agent with all default checks, -idle-runs times, side by side with -baseline-agent)")
	idleRuns         = flag.Int("idle-runs", 3, "rounds of the idle section (median reported)")
)

// section says whether the named measurement is to be made.
func section(name string) bool {
	switch {
	case *onlyScale:
		return name == "scale"
	case *onlyReplay:
		return name == "replay"
	}
	for _, s := range strings.Split(*sections, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func out(name string, format string, v ...any) {
	fmt.Printf("%s=%s\n", name, fmt.Sprintf(format, v...))
}

func run() error {
	out("machine", "%q", machine())
	dir, err := os.MkdirTemp("", "nodeguard-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if section("replay") {
		if err := replayCost(dir); err != nil {
			return err
		}
	}
	if section("kernlog") {
		if err := kernLogSideBySide(dir); err != nil {
			return err
		}
	}
	if section("node") {
		if err := nodeSection(dir); err != nil {
			return err
		}
	}
	if !section("live") && !section("kmsg") && !section("idle") && (!section("scale") || *scaleNodes <= 0) {
		return nil
	}
	c, err := testcluster.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	defer c.Stop()
	if section("kmsg") {
		if err := kmsgIdle(c, dir); err != nil {
			return err
		}
	}
	if section("idle") {
		if err := idleSideBySide(c, dir); err != nil {
			return err
		}
	}
	if section("live") {
		if err := live(c, dir); err != nil {
			return err
		}
	}
	if *scaleNodes > 0 && section("scale") {
		return scale(c)
	}
	return nil
}

func machine() string {
	model := "unknown cpu"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	var u syscall.Utsname
	syscall.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("%d cpus, %s, linux %s, %s", runtime.NumCPU(), model, rel, runtime.Version())
}

// rssSampleEvery is how often the idle agent's RSS is read.
const rssSampleEvery = 5 * time.Second

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func percentile(v []float64, p float64) float64 {
	sort.Float64s(v)
	i := int(p*float64(len(v)-1) + 0.5)
	return v[i]
}

// replayCost replays a generated log and reads the child's CPU time and
// peak RSS from the kernel. Beside it, from the same runs, the physical
// limit: this process reading the same file, splitting its lines and
// searching each once for one literal, the least a rule engine does per
// line. With -baseline-agent the other binary's runs alternate with the
// agent's, so that a noisy machine weighs on both alike.
func replayCost(dir string) error {
	path := filepath.Join(dir, "kern.log")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range *lines {
		fmt.Fprintf(w, "[%d.%06d] %s\n", i/200, (i%200)*5000, benchlog.Line(r, 100))
	}
	w.Flush()
	f.Close()
	debug.FreeOSMemory()
	var perCPU, rss, basePerCPU, limit, start []float64
	for range *runs {
		if *baselineAgent != "" {
			cpu, _, err := replayOnce(*baselineAgent, path)
			if err != nil {
				return err
			}
			basePerCPU = append(basePerCPU, float64(*lines)/cpu)
		}
		cpu, maxRSS, err := replayOnce(*agentBin, path)
		if err != nil {
			return err
		}
		perCPU = append(perCPU, float64(*lines)/cpu)
		rss = append(rss, maxRSS)
		n, cpu, err := physicalLimit(path)
		if err != nil {
			return err
		}
		limit = append(limit, float64(n)/cpu)
		if cpu, _, err = run1(exec.Command(*agentBin, "version")); err != nil {
			return err
		}
		start = append(start, cpu*1000)
	}
	out("replay_lines", "%d", *lines)
	out("replay_lines_per_cpu_second", "%.0f", median(slices.Clone(perCPU)))
	out("replay_lines_per_cpu_second_range", "%.0f-%.0f", slices.Min(perCPU), slices.Max(perCPU))
	out("replay_peak_rss_mib", "%.1f", median(rss))
	out("replay_process_start_cpu_ms", "%.1f", median(start))
	out("physical_limit_lines_per_cpu_second", "%.0f", median(slices.Clone(limit)))
	out("replay_share_of_physical_limit", "%.2f", median(perCPU)/median(limit))
	if *baselineAgent != "" {
		out("baseline_replay_lines_per_cpu_second", "%.0f", median(slices.Clone(basePerCPU)))
		out("baseline_replay_lines_per_cpu_second_range", "%.0f-%.0f", slices.Min(basePerCPU), slices.Max(basePerCPU))
		out("replay_speedup_over_baseline", "%.2f", median(perCPU)/median(basePerCPU))
	}
	return nil
}

// replayOnce runs `BIN replay PATH` and returns its CPU seconds and peak
// RSS in MiB.
func replayOnce(bin, path string) (cpu, rssMiB float64, err error) {
	cmd := exec.Command(bin, "replay", path)
	cpu, rssMiB, err = run1(cmd)
	if err != nil {
		return 0, 0, fmt.Errorf("%s replay: %w", bin, err)
	}
	return cpu, rssMiB, nil
}

// run1 runs cmd, its output discarded, and returns the CPU seconds and
// peak RSS in MiB the kernel counted for it.
func run1(cmd *exec.Cmd) (cpu, rssMiB float64, err error) {
	if err := cmd.Run(); err != nil {
		return 0, 0, err
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds(), float64(ru.Maxrss) / 1024, nil
}

// physicalLimit reads path, splits it into lines and searches each for one
// literal, and returns the lines and the CPU seconds this process spent.
// It streams the file, as replay does, which keeps this process small: a
// child's peak RSS counts its parent's at the fork.
func physicalLimit(path string) (lines int, cpu float64, err error) {
	before := selfCPU()
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	literal := []byte("Killed process")
	found := 0
	for sc.Scan() {
		lines++
		if bytes.Contains(sc.Bytes(), literal) {
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found == 0 {
		return 0, 0, fmt.Errorf("%s: no OOM kill in the generated log", path)
	}
	return lines, (selfCPU() - before).Seconds(), nil
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStat returns a process's CPU seconds and RSS in MiB.
func procStat(pid int) (cpu, rssMiB float64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+2:])
		if len(f) > 22 {
			ut, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			pages, _ := strconv.ParseFloat(f[21], 64)
			cpu = (ut + st) / 100 // USER_HZ
			rssMiB = pages * float64(os.Getpagesize()) / (1 << 20)
		}
	}
	return cpu, rssMiB
}

// rssSplit returns a process's anonymous and file-backed resident MiB.
func rssSplit(pid int) (anon, file float64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "RssAnon":
			anon = kb / 1024
		case "RssFile":
			file = kb / 1024
		}
	}
	return anon, file
}

// apiWrites sums the API server's counts of write requests, except the
// Lease renewals the bench makes itself as the kubelet.
func apiWrites(ctx context.Context, c *testcluster.Cluster) (status, events, other float64) {
	raw, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		return
	}
	fam, ok := fams["apiserver_request_total"]
	if !ok {
		return
	}
	for _, m := range fam.GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		switch l["verb"] {
		case "PATCH", "POST", "PUT", "DELETE", "CREATE", "UPDATE", "APPLY":
		default:
			continue
		}
		v := m.GetCounter().GetValue()
		switch {
		case l["resource"] == "leases":
		case l["resource"] == "nodes" && l["subresource"] == "status":
			status += v
		case l["resource"] == "events":
			events += v
		default:
			other += v
		}
	}
	return
}

func freeAddr() string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

// benchNode makes a Node and its Lease, and plays the kubelet's heartbeat
// on the Lease, so that the lease check is content, until stop.
func benchNode(ctx context.Context, c *testcluster.Cluster, node string) (stop func(), err error) {
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	duration := int32(40)
	now := metav1.NewMicroTime(time.Now())
	leases := c.Client.CoordinationV1().Leases("kube-node-lease")
	if _, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: &duration, RenewTime: &now}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Second):
			}
			if l, err := leases.Get(ctx, node, metav1.GetOptions{}); err == nil {
				now := metav1.NewMicroTime(time.Now())
				l.Spec.RenewTime = &now
				leases.Update(ctx, l, metav1.UpdateOptions{})
			}
		}
	}()
	return func() { close(done) }, nil
}

// idleRuntime starts a container runtime that answers, so that nothing is
// wrong while idle, and returns the checks' config for it ("" when there
// is none) and how to stop it.
func idleRuntime() (criConfig string, stop func()) {
	ctd, err := testcontainerd.Start()
	if err != nil {
		out("idle_container_runtime", "%q", "none: "+err.Error())
		return "", func() {}
	}
	out("idle_container_runtime", "%q", "containerd")
	return fmt.Sprintf("  cri: {endpoint: unix://%s}\n", ctd.Socket), ctd.Close
}

// idleSideBySide measures the idle agent with all default checks, and
// -baseline-agent's beside it, both running at once over the same window
// on nodes of their own, -idle-runs times: the machine's noise falls on
// both alike.
func idleSideBySide(c *testcluster.Cluster, dir string) error {
	ctx := context.Background()
	criConfig, stopRuntime := idleRuntime()
	defer stopRuntime()
	bins := []string{*agentBin}
	prefixes := []string{"idle"}
	if *baselineAgent != "" {
		bins = append(bins, *baselineAgent)
		prefixes = append(prefixes, "baseline_idle")
	}
	for i := range bins {
		stop, err := benchNode(ctx, c, fmt.Sprintf("bench-idle-%d", i))
		if err != nil {
			return err
		}
		defer stop()
	}
	cpu, wake, rss := make([][]float64, len(bins)), make([][]float64, len(bins)), make([][]float64, len(bins))
	for round := range *idleRuns {
		var cmds []*exec.Cmd
		var pids []int
		stopAll := func() {
			for _, cmd := range cmds {
				stopAgent(cmd)
			}
		}
		for i, bin := range bins {
			cmd, err := startAgentBin(bin, c, dir, fmt.Sprintf("idle-%d-%d", i, round), fmt.Sprintf("bench-idle-%d", i), "checks:\n"+criConfig)
			if err != nil {
				stopAll()
				return err
			}
			cmds, pids = append(cmds, cmd), append(pids, cmd.Process.Pid)
		}
		time.Sleep(*settle)
		kernel := countKernelRecords()
		fps := watchIdle(*idle, pids...)
		records := kernel()
		stopAll()
		out(fmt.Sprintf("idle_round%d_kernel_records", round+1), "%d", records)
		for i, f := range fps {
			out(fmt.Sprintf("%s_round%d_cpu_ms_per_minute", prefixes[i], round+1), "%.1f", f.cpuPerMinute*1000)
			out(fmt.Sprintf("%s_round%d_wakeups_per_minute", prefixes[i], round+1), "%.0f", f.wakeupsPerMinute)
			out(fmt.Sprintf("%s_round%d_rss_mib", prefixes[i], round+1), "%.1f", median(f.rss))
			if records > 0 {
				continue
			}
			cpu[i], wake[i], rss[i] = append(cpu[i], f.cpuPerMinute*1000), append(wake[i], f.wakeupsPerMinute), append(rss[i], median(f.rss))
		}
	}
	out("idle_seconds", "%.0f", idle.Seconds())
	out("idle_quiet_rounds", "%d", len(cpu[0]))
	if len(cpu[0]) == 0 {
		return nil
	}
	for i, prefix := range prefixes {
		out(prefix+"_cpu_ms_per_minute", "%.1f", median(slices.Clone(cpu[i])))
		out(prefix+"_cpu_ms_per_minute_range", "%.1f-%.1f", slices.Min(cpu[i]), slices.Max(cpu[i]))
		out(prefix+"_wakeups_per_minute", "%.0f", median(slices.Clone(wake[i])))
		out(prefix+"_rss_mib", "%.1f", median(slices.Clone(rss[i])))
	}
	return nil
}

// countKernelRecords starts counting the records the kernel logs, and
// returns what says how many came since (-1 when /dev/kmsg cannot be
// read). The idle agents read the host's kernel log, so a round in which
// other work on the machine logged (a test's hung-task lines) measures
// that work, not idleness: the medians leave such rounds out. It only
// reads /dev/kmsg.
func countKernelRecords() func() int {
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return func() int { return -1 }
	}
	if _, err := syscall.Seek(fd, 0, io.SeekEnd); err != nil {
		syscall.Close(fd)
		return func() int { return -1 }
	}
	return func() int {
		defer syscall.Close(fd)
		buf := make([]byte, 8192)
		n := 0
		for {
			// One record a read; EPIPE is records overwritten before
			// they were read, counted as one.
			_, err := syscall.Read(fd, buf)
			switch {
			case err == nil, errors.Is(err, syscall.EPIPE):
				n++
			case errors.Is(err, syscall.EINTR):
			default:
				return n
			}
		}
	}
}

func live(c *testcluster.Cluster, dir string) error {
	ctx := context.Background()
	const node = "bench-node"
	stopRenew, err := benchNode(ctx, c, node)
	if err != nil {
		return err
	}
	defer stopRenew()
	criConfig, stopRuntime := idleRuntime()
	defer stopRuntime()

	// Idle footprint and API load while all is well: the default checks
	// and configuration, but for where the runtime's socket is.
	idleAgent, err := startAgent(c, dir, "idle", node, "checks:\n"+criConfig)
	if err != nil {
		return err
	}
	// Past start-up: its writes, and the agent giving back the pages of
	// its binary that only start-up used (30 s in).
	time.Sleep(*settle)
	pid := idleAgent.Process.Pid
	cpu0 := cpuSeconds(pid)
	wake0 := wakeups(pid)
	s0, e0, o0 := apiWrites(ctx, c)
	// RSS moves with the garbage collector's cycle and with pages coming
	// back in, so one reading at the end is a draw: sample it through the
	// window and give the median and the highest.
	var rssSamples, anonSamples, fileSamples []float64
	for end := time.Now().Add(*idle); len(rssSamples) == 0 || time.Now().Before(end); {
		time.Sleep(max(0, min(rssSampleEvery, time.Until(end))))
		_, rss := procStat(pid)
		anon, file := rssSplit(pid)
		rssSamples, anonSamples, fileSamples = append(rssSamples, rss), append(anonSamples, anon), append(fileSamples, file)
	}
	cpu1 := cpuSeconds(pid)
	wake1 := wakeups(pid)
	s1, e1, o1 := apiWrites(ctx, c)
	stopAgent(idleAgent)
	minutes := idle.Minutes()
	out("idle_seconds", "%.0f", idle.Seconds())
	out("idle_rss_samples", "%d", len(rssSamples))
	out("idle_rss_mib", "%.1f", median(rssSamples))
	out("idle_rss_mib_max", "%.1f", slices.Max(rssSamples))
	// The split tells the agent's own memory (heap, stacks) from the pages
	// of its binary and libraries mapped from the page cache, which are
	// clean and which the kernel reclaims under pressure.
	out("idle_rss_anon_mib", "%.1f", median(anonSamples))
	out("idle_rss_file_mib", "%.1f", median(fileSamples))
	out("idle_cpu_seconds_per_minute", "%.3f", (cpu1-cpu0)/minutes)
	out("idle_wakeups_per_minute", "%.0f", (wake1-wake0)/minutes)
	out("idle_api_writes", "%.0f", s1-s0+e1-e0+o1-o0)
	out("idle_api_writes_per_minute", "%.2f", (s1-s0+e1-e0+o1-o0)/minutes)

	// Latency and flapping: an agent with a rule of the bench's own and a
	// file the bench writes, on the same node.
	flapFile := filepath.Join(dir, "flap.log")
	os.WriteFile(flapFile, nil, 0o644)
	cmd, err := startAgent(c, dir, "rules", node, "checks:\n"+criConfig+fmt.Sprintf(`  kmsg:
    startAtEnd: true
    files: [{path: %s}]
    conditions: [{type: BenchCondition, reason: NoBench, message: quiet}]
    rules:
      - {name: bench, kind: condition, condition: BenchCondition, reason: Bench, pattern: 'nodeguard-bench-condition \d+'}
`, flapFile))
	if err != nil {
		return err
	}
	defer stopAgent(cmd)
	// Past the release of start-up pages too, so that the first trial
	// shows what faulting the reporting path's code back in costs.
	time.Sleep(*settle)

	// Detection latency, kmsg to Event and to condition, seen through watches.
	if os.Geteuid() == 0 {
		if err := latency(ctx, c, node); err != nil {
			return err
		}
	} else {
		out("latency", "%q", "skipped: needs root to write /dev/kmsg")
	}

	// A condition flapping every 100 ms.
	s0, e0, _ = apiWrites(ctx, c)
	f, _ := os.OpenFile(flapFile, os.O_APPEND|os.O_WRONLY, 0)
	start := time.Now()
	for i := 0; time.Since(start) < *flap; i++ {
		fmt.Fprintf(f, "nodeguard-bench-condition %d\n", i)
		time.Sleep(100 * time.Millisecond)
	}
	f.Close()
	time.Sleep(2 * time.Second) // the last coalesced write
	elapsed := time.Since(start)
	s1, e1, _ = apiWrites(ctx, c)
	out("flap_seconds", "%.0f", flap.Seconds())
	out("flap_changes", "%.0f", flap.Seconds()*10)
	out("flap_status_writes_per_second", "%.2f", (s1-s0)/elapsed.Seconds())
	out("flap_event_writes", "%.0f", e1-e0)
	return nil
}

// startAgent runs the agent with a config of its own and waits until it
// answers /healthz.
func startAgent(c *testcluster.Cluster, dir, name, node, config string) (*exec.Cmd, error) {
	return startAgentBin(*agentBin, c, dir, name, node, config)
}

// startAgentBin is startAgent with another binary.
func startAgentBin(bin string, c *testcluster.Cluster, dir, name, node, config string) (*exec.Cmd, error) {
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return nil, err
	}
	addr := freeAddr()
	cmd := exec.Command(bin, "--kubeconfig="+c.Kubeconfig, "--node-name="+node, "--config="+path,
		"--state-dir="+filepath.Join(dir, name+"-state"), "--listen-address="+addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitHealthy(addr); err != nil {
		stopAgent(cmd)
		return nil, err
	}
	return cmd, nil
}

func stopAgent(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

func waitHealthy(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the agent did not become healthy")
}

func writeKmsg(line string) error {
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(line)
	return err
}

func latency(ctx context.Context, c *testcluster.Cluster, node string) error {
	ew, err := c.Client.CoreV1().Events(metav1.NamespaceAll).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", node).String()})
	if err != nil {
		return err
	}
	defer ew.Stop()
	nw, err := c.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", node).String()})
	if err != nil {
		return err
	}
	defer nw.Stop()
	waitFor := func(ch <-chan watch.Event, match func(watch.Event) bool) bool {
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e := <-ch:
				if match(e) {
					return true
				}
			case <-timeout:
				return false
			}
		}
	}
	var events, conds []float64
	run := rand.Int64()
	for i := range *trials {
		marker := fmt.Sprintf("bench%d-%d", run, i)
		t0 := time.Now()
		if err := writeKmsg(fmt.Sprintf("<4>NETDEV WATCHDOG: %s (ixgbe): transmit queue 2 timed out\n", marker)); err != nil {
			return err
		}
		if waitFor(ew.ResultChan(), func(e watch.Event) bool {
			ev, ok := e.Object.(*corev1.Event)
			return ok && strings.Contains(ev.Message, marker)
		}) {
			events = append(events, time.Since(t0).Seconds()*1000)
		}
		time.Sleep(150 * time.Millisecond) // the kernel rate-limits writers
	}
	// Conditions: a new message each trial, spaced past the one-write-a-
	// second coalescing so that each is a change of its own.
	for i := range *trials {
		marker := fmt.Sprintf("nodeguard-bench-condition %d%d", run%1000000, i)
		time.Sleep(1200 * time.Millisecond)
		t0 := time.Now()
		if err := writeKmsg("<4>" + marker + "\n"); err != nil {
			return err
		}
		if waitFor(nw.ResultChan(), func(e watch.Event) bool {
			n, ok := e.Object.(*corev1.Node)
			if !ok {
				return false
			}
			for _, c := range n.Status.Conditions {
				if c.Type == "BenchCondition" && strings.Contains(c.Message, marker) {
					return true
				}
			}
			return false
		}) {
			conds = append(conds, time.Since(t0).Seconds()*1000)
		}
	}
	out("latency_trials", "%d", *trials)
	if len(events) > 0 {
		// Before sorting: the first after a quiet spell is the coldest.
		out("kmsg_to_event_ms_first", "%.1f", events[0])
	}
	if len(events) > 0 {
		out("kmsg_to_event_ms_p50", "%.1f", percentile(events, 0.5))
		out("kmsg_to_event_ms_p99", "%.1f", percentile(events, 0.99))
	}
	if len(conds) > 0 {
		out("kmsg_to_condition_ms_p50", "%.1f", percentile(conds, 0.5))
		out("kmsg_to_condition_ms_p99", "%.1f", percentile(conds, 0.99))
	}
	out("latency_events_seen", "%d", len(events))
	out("latency_conditions_seen", "%d", len(conds))
	return nil
}
