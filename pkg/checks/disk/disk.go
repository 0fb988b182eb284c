// Package disk watches the node's disks for the failures that leave a node
// Ready while it can no longer run pods: a filesystem the kubelet or the
// runtime writes to gone read-only, a device that stops completing I/O, and
// writes that hang.
package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs/blockdevice"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "disk"

// Config is the check's section of the config file.
type Config struct {
	// Mounts are paths whose filesystems must be read-write, as the host
	// sees them.
	Mounts []string `json:"mounts,omitempty"`
	// ProbeDirs get a small file written and fsynced every period, as the
	// agent sees them (hostPath mounts in the DaemonSet).
	ProbeDirs []string `json:"probeDirs,omitempty"`
	// Period is how often the mounts, diskstats and probes are looked at.
	Period finding.Duration `json:"period,omitempty"`
	// ProbeTimeout is how long a probe write may take before the disk counts
	// as stuck.
	ProbeTimeout finding.Duration `json:"probeTimeout,omitempty"`
	// StuckWindow: a device with I/O in flight and no completions for this
	// long is stuck.
	StuckWindow finding.Duration `json:"stuckWindow,omitempty"`
}

// DefaultConfig watches the filesystems pods depend on. Two minutes of
// requests in flight with none completing is far past any healthy disk's
// latency, yet shorter than the kernel's hung-task report.
func DefaultConfig() *Config {
	return &Config{
		Mounts:       []string{"/", "/var/lib/kubelet", "/var/lib/containerd"},
		ProbeDirs:    []string{"/var/lib/kubelet"},
		Period:       finding.Duration{Duration: 10 * time.Second},
		ProbeTimeout: finding.Duration{Duration: 10 * time.Second},
		StuckWindow:  finding.Duration{Duration: 2 * time.Minute},
	}
}

// Validate checks the durations.
func (c *Config) Validate() error {
	switch {
	case c.Period.Duration < 100*time.Millisecond:
		return &finding.FieldError{Field: "period", Value: c.Period, Reason: "must be at least 100ms"}
	case c.ProbeTimeout.Duration <= 0:
		return &finding.FieldError{Field: "probeTimeout", Value: c.ProbeTimeout, Reason: "must be above zero"}
	case c.StuckWindow.Duration < c.Period.Duration:
		return &finding.FieldError{Field: "stuckWindow", Value: c.StuckWindow, Reason: "must be at least the period"}
	}
	for i, m := range c.Mounts {
		if !filepath.IsAbs(m) {
			return &finding.FieldError{Field: fmt.Sprintf("mounts[%d]", i), Value: m, Reason: "must be an absolute path"}
		}
	}
	return nil
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env)
})

// Check watches the disks.
type Check struct {
	cfg *Config
	log *zap.Logger
	// mountinfo is the host's first process's mount table; table is the
	// buffer it is read into, kept from one look to the next (the looks
	// never overlap: RunPeriodic starts none while one runs).
	mountinfo string
	table     []byte
	block     blockdevice.FS
	now       func() time.Time
}

// New builds the check.
func New(cfg *Config, env checks.Env) (*Check, error) {
	procPath, sysPath := env.Proc(), env.Sys()
	block, err := blockdevice.NewFS(procPath, sysPath)
	if err != nil {
		return nil, fmt.Errorf("opening block device stats: %w", err)
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	return &Check{cfg: cfg, log: env.Log, mountinfo: filepath.Join(procPath, "1", "mountinfo"), block: block, now: env.Now}, nil
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{
		finding.DiskIOStuck,
		finding.ReadonlyFilesystem,
	}
}

// Run watches until ctx ends. The write probe runs in a loop of its own:
// a write to a hung disk blocks in the kernel, and must not stop the mount
// and diskstats checks from reporting.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	st := &stuckState{emit: emit, now: c.now, healthy: healthyIO(c.cfg.ProbeDirs)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if len(c.cfg.ProbeDirs) == 0 {
			return
		}
		checks.RunPeriodic(ctx, c.cfg.Period.Duration, c.cfg.ProbeTimeout.Duration,
			func(ctx context.Context) ([]finding.Finding, error) {
				st.set("probe", c.writeProbes())
				return nil, nil
			},
			emit,
			func(s *checks.ProbeStuck) {
				// The message names when the write started, not how long ago,
				// so that it does not change (and cost a write) every period.
				st.set("probe", fmt.Sprintf("a write and fsync in %s has not finished within %s; started %s",
					strings.Join(c.cfg.ProbeDirs, ", "), c.cfg.ProbeTimeout.Duration, s.Since.Format(time.RFC3339)))
			},
			func(err error) { c.log.Warn("disk write probe failed", zap.Error(err)) })
	}()
	stats := map[string]ioStreak{}
	err := checks.RunPeriodic(ctx, c.cfg.Period.Duration, c.cfg.Period.Duration,
		func(ctx context.Context) ([]finding.Finding, error) {
			ro, roFacts, err := c.readOnlyMounts()
			if err != nil {
				return nil, err
			}
			if msg, facts, ok := c.stuckDevices(stats); ok {
				st.setFacts("diskstats", msg, facts)
			}
			if len(ro) == 0 {
				return []finding.Finding{finding.Condition(finding.ReadonlyFilesystem.Type, finding.StatusFalse, "MountsAreReadWrite",
					"read-write: "+strings.Join(c.cfg.Mounts, ", "))}, nil
			}
			f := finding.Condition(finding.ReadonlyFilesystem.Type, finding.StatusTrue, "MountReadOnly", strings.Join(ro, "; "))
			f.Facts = roFacts
			return []finding.Finding{f}, nil
		},
		emit,
		func(s *checks.ProbeStuck) { c.log.Warn("reading mounts or diskstats is stuck", zap.Error(s)) },
		func(err error) { c.log.Warn("reading mounts or diskstats failed", zap.Error(err)) })
	wg.Wait()
	return err
}

// stuckState combines the two sources of finding.DiskIOStuck.Type (the write probe and
// diskstats) into one condition.
type stuckState struct {
	mu      sync.Mutex
	emit    func(finding.Finding)
	now     func() time.Time
	why     map[string]string
	facts   map[string]map[string]string
	emitted bool
	// healthy is the message of a verdict of no problem; empty for the
	// catalog's default.
	healthy string
}

// healthyIO says, for a verdict of no problem, where the probe wrote: a
// reader of the Node can then tell the probe's verdict from the default
// published before it ran, and see which directories it covers.
func healthyIO(dirs []string) string {
	if len(dirs) == 0 {
		return ""
	}
	return "writes complete in " + strings.Join(dirs, ", ") + ", and the node's disks complete I/O"
}

func (s *stuckState) set(source, why string) { s.setFacts(source, why, nil) }

// setFacts is set with the source's figures for the evidence, which change
// nothing on their own: the condition is emitted again only when why does.
func (s *stuckState) setFacts(source, why string, facts map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.why == nil {
		s.why, s.facts = map[string]string{}, map[string]map[string]string{}
	}
	s.facts[source] = facts
	if old, ok := s.why[source]; ok && old == why && s.emitted {
		return
	}
	s.why[source] = why
	var problems []string
	allFacts := map[string]string{}
	for _, src := range []string{"probe", "diskstats"} {
		if w := s.why[src]; w != "" {
			problems = append(problems, w)
			allFacts[src] = w
			for k, v := range s.facts[src] {
				allFacts[k] = v
			}
		}
	}
	f := finding.DiskIOStuck.Healthy()
	if s.healthy != "" {
		f.Message = s.healthy
	}
	if len(problems) > 0 {
		f = finding.Condition(finding.DiskIOStuck.Type, finding.StatusTrue, "DiskIOIsStuck", strings.Join(problems, "; "))
		f.Facts = allFacts
	}
	f.Time = s.now()
	s.emit(f)
	s.emitted = true
}

// writeProbes writes, fsyncs and removes a small file in each probe dir,
// and says what failed. A read-only filesystem is the mount check's to
// report, not a stuck disk.
func (c *Check) writeProbes() string {
	var problems []string
	for _, dir := range c.cfg.ProbeDirs {
		if err := writeProbe(dir); err != nil && !errors.Is(err, syscall.EROFS) && !errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, err.Error())
		}
	}
	return strings.Join(problems, "; ")
}

func writeProbe(dir string) error {
	path := filepath.Join(dir, ".nodeguard-probe")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write probe in %s: %w", dir, err)
	}
	_, werr := f.WriteString(time.Now().Format(time.RFC3339Nano))
	serr := f.Sync()
	cerr := f.Close()
	os.Remove(path)
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("write probe in %s: %w", dir, err)
	}
	return nil
}

// readOnlyMounts says which configured paths sit on a read-only mount, as
// the host's first process sees its mounts, and, for the evidence, each
// such mount's line of mountinfo in full. A node's mount table has a line
// for every container's root, volume and token (hundreds on a busy node):
// only the mount each path is on is parsed, so that a look every period
// costs one read of the file, not maps of options for every line.
func (c *Check) readOnlyMounts() ([]string, map[string]string, error) {
	table, err := readInto(c.table[:0], c.mountinfo)
	c.table = table
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, checks.ErrNoData
		}
		return nil, nil, fmt.Errorf("reading the host's mounts: %w", err)
	}
	var ro []string
	facts := map[string]string{}
	for i, line := range containing(table, c.cfg.Mounts) {
		if line == nil {
			continue
		}
		path := c.cfg.Mounts[i]
		m, err := parseMount(string(line))
		if err != nil {
			return nil, nil, fmt.Errorf("reading the host's mounts: %w", err)
		}
		if hasOption(m.options, "ro") || hasOption(m.superOptions, "ro") {
			ro = append(ro, fmt.Sprintf("%s is on a read-only %s filesystem (%s mounted at %s)", path, m.fsType, m.source, m.mountPoint))
			facts["mount "+path] = fmt.Sprintf("id %s, device %s, %s at %s, options %s, super options %s",
				m.id, m.device, m.source, m.mountPoint, sortedOptions(m.options), sortedOptions(m.superOptions))
		}
	}
	return ro, facts, nil
}

// readInto reads the file at path into buf, growing it as needed.
func readInto(buf []byte, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// containing returns, for each path, the line of the mount it is on: the
// last-mounted one with the longest mount point that is a prefix of the
// path; nil when none is.
func containing(table []byte, paths []string) [][]byte {
	best := make([][]byte, len(paths))
	bestLen := make([]int, len(paths))
	for len(table) > 0 {
		line := table
		if n := bytes.IndexByte(table, '\n'); n >= 0 {
			line, table = table[:n], table[n+1:]
		} else {
			table = nil
		}
		mp := field(line, 4)
		if len(mp) == 0 {
			continue
		}
		dir := bytes.TrimSuffix(mp, []byte("/"))
		for i, path := range paths {
			on := path == string(mp) || (len(path) > len(dir) && path[:len(dir)] == string(dir) && path[len(dir)] == '/')
			if on && (best[i] == nil || len(mp) >= bestLen[i]) {
				best[i], bestLen[i] = line, len(mp)
			}
		}
	}
	return best
}

// field returns the nth (from 0) space-separated field of line.
func field(line []byte, n int) []byte {
	for ; n > 0; n-- {
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			return nil
		}
		line = line[i+1:]
	}
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		return line[:i]
	}
	return line
}

// mount is what the check reads of a line of mountinfo.
type mount struct {
	id, device, mountPoint, options string
	fsType, source, superOptions    string
}

// parseMount reads a line of mountinfo (proc_pid_mountinfo(5)): ID,
// parent ID, major:minor, root, mount point, options, optional fields up
// to a lone "-", then the filesystem type, source and superblock options.
func parseMount(line string) (mount, error) {
	before, after, ok := strings.Cut(line, " - ")
	f := strings.Fields(before)
	g := strings.Fields(after)
	if !ok || len(f) < 6 || len(g) < 3 {
		return mount{}, fmt.Errorf("a malformed line of mountinfo: %q", line)
	}
	return mount{id: f[0], device: f[2], mountPoint: f[4], options: f[5], fsType: g[0], source: g[1], superOptions: g[2]}, nil
}

// hasOption says whether a comma-separated option list holds opt.
func hasOption(list, opt string) bool {
	for o := range strings.SplitSeq(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// sortedOptions is an option list sorted, each option once.
func sortedOptions(list string) string {
	opts := strings.Split(list, ",")
	slices.Sort(opts)
	return strings.Join(slices.Compact(opts), ",")
}

// ioStreak is a device's run of probes with I/O in flight and no
// completion: since when, and the completion count it is stuck at. One per
// device however long it lasts.
type ioStreak struct {
	since     time.Time
	completed uint64
}

// stuckDevices says which block devices have had I/O in flight and no
// completions for the whole stuck window. When /proc/diskstats cannot be
// read it says so (ok false), and the caller keeps what it had: an
// unreadable file is no evidence that the disks recovered.
func (c *Check) stuckDevices(streaks map[string]ioStreak) (msg string, facts map[string]string, ok bool) {
	stats, err := c.block.ProcDiskstats()
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, true // no diskstats here (gVisor, a restricted /proc): nothing to watch
	}
	if err != nil {
		c.log.Warn("reading /proc/diskstats failed; keeping the last verdict on stuck I/O", zap.Error(err))
		return "", nil, false
	}
	now := c.now()
	var stuck []string
	seen := map[string]bool{}
	for _, d := range stats {
		name := d.DeviceName
		seen[name] = true
		completed := d.ReadIOs + d.WriteIOs + d.DiscardIOs + d.FlushRequestsCompleted
		if d.IOsInProgress == 0 {
			delete(streaks, name) // nothing waiting: not stuck
			continue
		}
		st, had := streaks[name]
		if !had || st.completed != completed {
			st = ioStreak{since: now, completed: completed} // a completion: start again
			streaks[name] = st
		}
		if now.Sub(st.since) >= c.cfg.StuckWindow.Duration {
			// No counts or ages in the message: it would change on every
			// probe while the device stays stuck, and each change is a
			// status write, from every node at once when shared storage
			// stalls. The log and /proc/diskstats have the figures.
			stuck = append(stuck, fmt.Sprintf("%s has had I/O in flight and none completed for %s or more", name, c.cfg.StuckWindow.Duration))
			if facts == nil {
				facts = map[string]string{}
			}
			facts["device "+name] = fmt.Sprintf("%d I/Os in flight, %d completed (reads, writes, discards, flushes) since %s, %d ms weighted I/O time",
				d.IOsInProgress, completed, st.since.UTC().Format(time.RFC3339), d.WeightedIOTicks)
		}
	}
	for name := range streaks {
		if !seen[name] {
			delete(streaks, name)
		}
	}
	sort.Strings(stuck)
	return strings.Join(stuck, "; "), facts, true
}
