package main

// Side by side with node-problem-detector: when -npd names an NPD binary
// built by hand from its source (never by a recipe of this project), the
// bench runs it on the same jobs as nodeguard, in the same run and
// alternated, and prints its figures beside nodeguard's. Without -npd only
// nodeguard's are printed.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/internal/benchlog"
	"github.com/nodeguard/nodeguard/internal/testcluster"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
)

var (
	npdBin      = flag.String("npd", "", "an NPD binary built by hand from its source: its figures are printed beside nodeguard's")
	npdConfig   = flag.String("npd-config", "", "NPD's config directory (default: config/ beside the binary or one level up)")
	kernLines   = flag.Int("kernlog-lines", 300000, "lines in the generated kern.log both tools read")
	kmsgWindows = flag.Int("kmsg-windows", 3, "consecutive -idle windows of the kernel-log-only job (median reported)")
)

// npdConfigDir finds NPD's shipped config/ for the binary.
func npdConfigDir() (string, error) {
	if *npdConfig != "" {
		return *npdConfig, nil
	}
	bin := filepath.Dir(*npdBin)
	for _, d := range []string{filepath.Join(bin, "config"), filepath.Join(bin, "..", "config")} {
		if _, err := os.Stat(filepath.Join(d, "kernel-monitor.json")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no config/kernel-monitor.json beside %s or one level up: give -npd-config", *npdBin)
}

// taskHung is NPD's TaskHung pattern (config/kernel-monitor.json), which the
// generated log's last line matches: NPD has no command that reads a file
// and exits, so the bench waits until NPD has counted every such line.
var taskHung = regexp.MustCompile(`task \S+:\w+ blocked for more than \w+ seconds\.`)

// writeKernLog writes n lines in kern.log's syslog form, stamped within the
// last minute (NPD's filelog reads only lines since boot and within its
// lookback), the last one a hung task; it returns how many lines match
// TaskHung.
func writeKernLog(path string, n int) (hung int, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(3, 4))
	start := time.Now().Add(-time.Minute)
	host, _ := os.Hostname()
	for i := range n {
		msg := benchlog.Line(r, 100)
		if i == n-1 {
			msg = "INFO: task nodeguard-bench:4242 blocked for more than 120 seconds."
		}
		if taskHung.MatchString(msg) {
			hung++
		}
		at := start.Add(time.Duration(i) * 50 * time.Second / time.Duration(n))
		fmt.Fprintf(w, "%s %s kernel: [%d.%06d] %s\n", at.Format(time.Stamp), host, i/200, (i%200)*5000, msg)
	}
	return hung, w.Flush()
}

// kernLogSideBySide has nodeguard replay, and NPD follow with its filelog
// plugin and shipped kernel rules, the same kern.log, alternating, and
// gives each one's lines per CPU-second including process start.
func kernLogSideBySide(dir string) error {
	path := filepath.Join(dir, "kern-syslog.log")
	hung, err := writeKernLog(path, *kernLines)
	if err != nil {
		return err
	}
	var npdRun func() (float64, error)
	if *npdBin != "" {
		cfgDir, err := npdConfigDir()
		if err != nil {
			return err
		}
		cfg, err := npdFilelogConfig(cfgDir, dir, path)
		if err != nil {
			return err
		}
		npdRun = func() (float64, error) { return npdFilelogCPU(cfg, hung) }
	}
	var ng, npd, ratio []float64
	for range *runs {
		cmd := exec.Command(*agentBin, "replay", path)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		ngCPU := cpuOf(cmd.ProcessState)
		ng = append(ng, float64(*kernLines)/ngCPU)
		if npdRun == nil {
			continue
		}
		cpu, err := npdRun()
		if err != nil {
			return err
		}
		npd = append(npd, float64(*kernLines)/cpu)
		ratio = append(ratio, cpu/ngCPU)
	}
	out("kernlog_lines", "%d", *kernLines)
	out("kernlog_replay_lines_per_cpu_second", "%.0f", median(ng))
	if npdRun != nil {
		out("npd_kernlog_filelog_lines_per_cpu_second", "%.0f", median(npd))
		out("kernlog_nodeguard_over_npd", "%.1f", median(ratio))
	}
	return nil
}

func cpuOf(ps *os.ProcessState) float64 {
	ru := ps.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// npdFilelogConfig writes NPD's shipped kernel-monitor-filelog.json with its
// logPath pointed at path and a lookback that takes the whole file.
func npdFilelogConfig(cfgDir, dir, path string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(cfgDir, "kernel-monitor-filelog.json"))
	if err != nil {
		return "", err
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("reading NPD's kernel-monitor-filelog.json: %w", err)
	}
	cfg["logPath"], cfg["lookback"] = path, "10m"
	b, _ := json.Marshal(cfg)
	out := filepath.Join(dir, "npd-filelog.json")
	return out, os.WriteFile(out, b, 0o644)
}

// npdFilelogCPU runs NPD on the filelog config with no exporter but
// Prometheus, waits until its problem counter has every TaskHung of the
// file, and returns the CPU it used.
func npdFilelogCPU(cfg string, hung int) (float64, error) {
	promAddr := freeAddr()
	host, port, _ := strings.Cut(promAddr, ":")
	cmd := exec.Command(*npdBin, "--config.system-log-monitor="+cfg, "--enable-k8s-exporter=false",
		"--prometheus-address="+host, "--prometheus-port="+port, "--port=0", "--hostname-override=bench-npd")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// Scraped every 200 ms: a scrape costs NPD about a millisecond, under
	// 1% of a run of seconds.
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		if problemCount("http://"+promAddr+"/metrics", "TaskHung") >= float64(hung) {
			cpu, _ := procStat(cmd.Process.Pid)
			return cpu, nil
		}
	}
	return 0, fmt.Errorf("NPD did not count %d TaskHung problems within 10 minutes", hung)
}

// problemCount reads NPD's problem_counter for reason.
func problemCount(url, reason string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0
	}
	var n float64
	for name, fam := range fams {
		if !strings.HasPrefix(name, "problem_counter") {
			continue
		}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// wakeups sums the voluntary and involuntary context switches of every
// thread of pid: each is the process going to sleep, or being put off a
// CPU, so their rate is how often it wakes.
func wakeups(pid int) float64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n float64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += x
			}
		}
	}
	return n
}

// cpuSeconds sums the time every thread of pid has run, from schedstat:
// nanoseconds, where /proc/PID/stat counts 10 ms ticks, too coarse for a
// process that runs a few milliseconds a minute.
func cpuSeconds(pid int) float64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var ns float64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			x, _ := strconv.ParseFloat(f[0], 64)
			ns += x
		}
	}
	return ns / 1e9
}

// footprint is one process's idle cost over a window.
type footprint struct {
	cpuPerMinute, wakeupsPerMinute float64
	rss                            []float64
}

// watchIdle samples the processes through one window, side by side.
func watchIdle(window time.Duration, pids ...int) []footprint {
	cpu0, wake0 := make([]float64, len(pids)), make([]float64, len(pids))
	for i, pid := range pids {
		cpu0[i] = cpuSeconds(pid)
		wake0[i] = wakeups(pid)
	}
	fps := make([]footprint, len(pids))
	for end := time.Now().Add(window); len(fps[0].rss) == 0 || time.Now().Before(end); {
		time.Sleep(max(0, min(rssSampleEvery, time.Until(end))))
		for i, pid := range pids {
			_, rss := procStat(pid)
			fps[i].rss = append(fps[i].rss, rss)
		}
	}
	for i, pid := range pids {
		fps[i].cpuPerMinute = (cpuSeconds(pid) - cpu0[i]) / window.Minutes()
		fps[i].wakeupsPerMinute = (wakeups(pid) - wake0[i]) / window.Minutes()
	}
	return fps
}

// kmsgIdle is the job NPD does by default, reading the kernel log and
// reporting to the API server, done by both at once on one node of their
// own each: nodeguard with only its kmsg check, NPD with its shipped
// kernel-monitor.json. Nothing is logged to the kernel in the window.
func kmsgIdle(c *testcluster.Cluster, dir string) error {
	ctx := context.Background()
	nodes := []string{"bench-kmsg-nodeguard", "bench-kmsg-npd"}
	for _, n := range nodes {
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	only := "checks:\n  kmsg: {startAtEnd: true}\n"
	for _, reg := range all.Registry {
		if reg.Name != "kmsg" {
			only += fmt.Sprintf("  %s: {enabled: false}\n", reg.Name)
		}
	}
	ng, err := startAgent(c, dir, "kmsg-only", nodes[0], only)
	if err != nil {
		return err
	}
	defer stopAgent(ng)
	pids := []int{ng.Process.Pid}
	if *npdBin != "" {
		cfgDir, err := npdConfigDir()
		if err != nil {
			return err
		}
		host, port, _ := strings.Cut(freeAddr(), ":")
		_, hport, _ := strings.Cut(freeAddr(), ":")
		npd := exec.Command(*npdBin, "--config.system-log-monitor="+filepath.Join(cfgDir, "kernel-monitor.json"),
			"--apiserver-override="+c.Config.Host+"?inClusterConfig=false&auth="+c.Kubeconfig,
			"--hostname-override="+nodes[1], "--prometheus-address="+host, "--prometheus-port="+port,
			"--address=127.0.0.1", "--port="+hport)
		npd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		log, _ := os.Create(filepath.Join(dir, "npd-kmsg.log"))
		defer log.Close()
		npd.Stdout, npd.Stderr = log, log
		if err := npd.Start(); err != nil {
			return fmt.Errorf("starting NPD: %w", err)
		}
		defer func() { npd.Process.Signal(syscall.SIGTERM); npd.Wait() }()
		pids = append(pids, npd.Process.Pid)
	}
	time.Sleep(*settle)
	// Consecutive windows, both processes side by side in each: the Go
	// runtime of each forces a garbage collection every 2 minutes, and
	// one window in which one of them does (or the kernel maps back pages
	// of its binary) reads more than the rest. The median says what
	// idleness costs; the whole span's average is printed as well.
	wins := make([][]footprint, len(pids))
	for range max(1, *kmsgWindows) {
		for i, f := range watchIdle(*idle, pids...) {
			wins[i] = append(wins[i], f)
		}
	}
	put := func(prefix string, fs []footprint) {
		var cpu, wake, rss []float64
		for _, f := range fs {
			cpu, wake = append(cpu, f.cpuPerMinute*1000), append(wake, f.wakeupsPerMinute)
			rss = append(rss, f.rss...)
		}
		var all float64
		for _, c := range cpu {
			all += c / float64(len(cpu))
		}
		out(prefix+"_cpu_ms_per_minute", "%.1f", median(slices.Clone(cpu)))
		out(prefix+"_cpu_ms_per_minute_windows", "%s", joinFloats(cpu))
		out(prefix+"_cpu_ms_per_minute_whole", "%.1f", all)
		out(prefix+"_wakeups_per_minute", "%.0f", median(wake))
		out(prefix+"_rss_mib", "%.1f", median(rss))
	}
	out("kmsg_idle_seconds", "%.0f", idle.Seconds())
	out("kmsg_idle_windows", "%d", len(wins[0]))
	put("kmsg_idle", wins[0])
	if len(wins) > 1 {
		put("npd_kmsg_idle", wins[1])
	}
	return nil
}

// joinFloats prints figures as "a b c", one decimal each.
func joinFloats(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return strings.Join(parts, " ")
}
