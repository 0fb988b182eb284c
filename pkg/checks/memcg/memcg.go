// Package memcg watches for kernel memory leaks that end in the OOM killer
// with no workload to blame: memory cgroups that were removed but live on
// as zombies (pinned by the page cache or kernel memory charged to them, the
// memcg/kmem leak of 3.10-era kernels), and unreclaimable slab that only
// grows. It also exports memory pressure (PSI).
package memcg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "memcg"

// Config is the check's section of the config file.
type Config struct {
	// CgroupRoot is where the cgroup hierarchies are mounted; default the
	// host's /sys/fs/cgroup under sysPath.
	CgroupRoot string           `json:"cgroupRoot,omitempty"`
	Period     finding.Duration `json:"period,omitempty"`
	// ZombieThreshold dying memory cgroups make a leak.
	ZombieThreshold int `json:"zombieThreshold,omitempty"`
	// SlabGrowthBytes of unreclaimable slab growth within SlabWindow, rising
	// in most samples, make a leak; 0 turns it off.
	SlabGrowthBytes uint64           `json:"slabGrowthBytes,omitempty"`
	SlabWindow      finding.Duration `json:"slabWindow,omitempty"`
	// PSIThreshold is the share of time (percent, some avg60) some task
	// waited for memory above which, held for PSIDuration, a
	// MemoryPressureHigh event is made; 0 turns it off.
	PSIThreshold float64          `json:"psiThreshold,omitempty"`
	PSIDuration  finding.Duration `json:"psiDuration,omitempty"`
}

// DefaultConfig: a busy node removes pods' cgroups all day and a few
// hundred may be dying at once while their page cache is reclaimed;
// thousands that stay are the leak. A gigabyte of unreclaimable slab growth
// in an hour is far beyond a steady workload's.
func DefaultConfig() *Config {
	return &Config{
		Period:          finding.Duration{Duration: time.Minute},
		ZombieThreshold: 2000,
		SlabGrowthBytes: 1 << 30,
		SlabWindow:      finding.Duration{Duration: time.Hour},
		PSIThreshold:    20,
		PSIDuration:     finding.Duration{Duration: 5 * time.Minute},
	}
}

// Validate checks the numbers.
func (c *Config) Validate() error {
	switch {
	case c.Period.Duration < 100*time.Millisecond:
		return &finding.FieldError{Field: "period", Value: c.Period, Reason: "must be at least 100ms"}
	case c.ZombieThreshold < 1:
		return &finding.FieldError{Field: "zombieThreshold", Value: c.ZombieThreshold, Reason: "must be at least 1"}
	case c.SlabGrowthBytes > 0 && c.SlabWindow.Duration < c.Period.Duration:
		return &finding.FieldError{Field: "slabWindow", Value: c.SlabWindow, Reason: "must be at least the period"}
	case c.PSIThreshold < 0 || c.PSIThreshold > 100:
		return &finding.FieldError{Field: "psiThreshold", Value: c.PSIThreshold, Reason: "is a percentage, 0 to 100"}
	}
	return nil
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env)
})

// Check watches memory cgroups and slab.
type Check struct {
	cfg     *Config
	log     *zap.Logger
	proc    procfs.FS
	root    string
	now     func() time.Time
	zombies prometheus.Gauge
	slab    prometheus.Gauge
	psi     prometheus.Gauge
}

// New builds the check.
func New(cfg *Config, env checks.Env) (*Check, error) {
	procPath, sysPath := env.Proc(), env.Sys()
	proc, err := procfs.NewFS(procPath)
	if err != nil {
		return nil, fmt.Errorf("opening procfs at %s: %w", procPath, err)
	}
	root := cfg.CgroupRoot
	if root == "" {
		root = filepath.Join(sysPath, "fs/cgroup")
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Metrics == nil {
		env.Metrics = prometheus.NewRegistry()
	}
	c := &Check{cfg: cfg, log: env.Log, proc: proc, root: root, now: env.Now,
		zombies: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodeguard_memory_cgroups_dying",
			Help: "Memory cgroups removed but not yet freed (zombies)."}),
		slab: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodeguard_memory_slab_unreclaimable_bytes",
			Help: "Unreclaimable kernel slab memory (SUnreclaim)."}),
		psi: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodeguard_memory_pressure_some_ratio",
			Help: "Share of the last minute some task waited for memory (PSI some avg60), 0 to 1."}),
	}
	env.Metrics.MustRegister(c.zombies, c.slab, c.psi)
	return c, nil
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.MemoryCgroupLeak}
}

// Run probes every period until ctx ends.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	st := &state{}
	return checks.RunLogged(ctx, c.log, "reading memory cgroups", c.cfg.Period.Duration, c.cfg.Period.Duration,
		func(ctx context.Context) ([]finding.Finding, error) { return c.probe(st) },
		emit)
}

type slabSample struct {
	at    time.Time
	bytes uint64
}

type state struct {
	slab          []slabSample
	pressureSince time.Time
	pressureSaid  bool
}

func (c *Check) probe(st *state) ([]finding.Finding, error) {
	now := c.now()
	var problems, notes []string
	zombies, how, err := c.dyingMemcgs()
	switch {
	case err == nil:
		c.zombies.Set(float64(zombies))
		if zombies >= c.cfg.ZombieThreshold {
			problems = append(problems, fmt.Sprintf("%d memory cgroups are dying but not freed (%s), threshold %d", zombies, how, c.cfg.ZombieThreshold))
		}
	case !errors.Is(err, checks.ErrNoData):
		return nil, err
	}
	if p := c.slabGrowth(st, now); p != "" {
		problems = append(problems, p)
	}
	var out []finding.Finding
	if ev := c.pressure(st, now); ev != nil {
		out = append(out, *ev)
	}
	if len(problems) == 0 {
		notes = append(notes, "no leaked memory cgroups or slab growth")
		out = append(out, finding.Condition(finding.MemoryCgroupLeak.Type, finding.StatusFalse, finding.MemoryCgroupLeak.Reason, strings.Join(notes, "; ")))
	} else {
		out = append(out, finding.Condition(finding.MemoryCgroupLeak.Type, finding.StatusTrue, "MemoryCgroupLeak", strings.Join(problems, "; ")))
	}
	return out, nil
}

// dyingMemcgs counts memory cgroups that were removed but live on. On cgroup
// v1 the kernel's count in /proc/cgroups includes them while the directory
// tree does not; on v2 cgroup.stat counts dying descendants directly.
func (c *Check) dyingMemcgs() (int, string, error) {
	v1 := filepath.Join(c.root, "memory")
	if _, err := os.Stat(filepath.Join(v1, "memory.usage_in_bytes")); err == nil {
		summaries, err := c.proc.CgroupSummarys()
		if err != nil {
			return 0, "", fmt.Errorf("reading /proc/cgroups: %w", err)
		}
		kernel := -1
		for _, s := range summaries {
			if s.SubsysName == "memory" {
				kernel = s.Cgroups
			}
		}
		if kernel < 0 {
			return 0, "", checks.ErrNoData
		}
		onDisk := 0
		err = filepath.WalkDir(v1, func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while we walked
				}
				return err
			}
			if d.IsDir() {
				onDisk++
			}
			return nil
		})
		if err != nil {
			return 0, "", fmt.Errorf("counting memory cgroups under %s: %w", v1, err)
		}
		return max(kernel-onDisk, 0), fmt.Sprintf("the kernel counts %d, %s holds %d", kernel, v1, onDisk), nil
	}
	b, err := os.ReadFile(filepath.Join(c.root, "cgroup.stat"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", checks.ErrNoData
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading cgroup.stat: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if k == "nr_dying_descendants" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, "", fmt.Errorf("%s: nr_dying_descendants %q: %w", filepath.Join(c.root, "cgroup.stat"), v, err)
			}
			return n, "cgroup v2 nr_dying_descendants", nil
		}
	}
	return 0, "", checks.ErrNoData
}

// slabGrowth reports unreclaimable slab that grew by SlabGrowthBytes within
// the window and rose in most samples (a steady leak, not one burst).
func (c *Check) slabGrowth(st *state, now time.Time) string {
	mi, err := c.proc.Meminfo()
	if err != nil || mi.SUnreclaimBytes == nil {
		return ""
	}
	cur := *mi.SUnreclaimBytes
	c.slab.Set(float64(cur))
	if c.cfg.SlabGrowthBytes == 0 {
		return ""
	}
	st.slab = append(st.slab, slabSample{now, cur})
	for len(st.slab) > 1 && now.Sub(st.slab[0].at) > c.cfg.SlabWindow.Duration {
		st.slab = st.slab[1:]
	}
	first := st.slab[0]
	if len(st.slab) < 3 || cur < first.bytes || cur-first.bytes < c.cfg.SlabGrowthBytes {
		return ""
	}
	rises := 0
	for i := 1; i < len(st.slab); i++ {
		if st.slab[i].bytes > st.slab[i-1].bytes {
			rises++
		}
	}
	if rises*5 < (len(st.slab)-1)*4 {
		return ""
	}
	return fmt.Sprintf("unreclaimable slab grew by %d MiB in %s, to %d MiB", (cur-first.bytes)>>20, now.Sub(first.at).Round(time.Minute), cur>>20)
}

// pressure exports PSI and makes one event when memory pressure has stayed
// above the threshold for PSIDuration.
func (c *Check) pressure(st *state, now time.Time) *finding.Finding {
	psi, err := c.proc.PSIStatsForResource("memory")
	if err != nil || psi.Some == nil {
		return nil
	}
	c.psi.Set(psi.Some.Avg60 / 100)
	if c.cfg.PSIThreshold == 0 || psi.Some.Avg60 < c.cfg.PSIThreshold {
		st.pressureSince, st.pressureSaid = time.Time{}, false
		return nil
	}
	if st.pressureSince.IsZero() {
		st.pressureSince = now
	}
	if st.pressureSaid || now.Sub(st.pressureSince) < c.cfg.PSIDuration.Duration {
		return nil
	}
	st.pressureSaid = true
	ev := finding.Event(finding.SeverityWarning, "MemoryPressureHigh",
		fmt.Sprintf("tasks waited for memory %.1f%% of the last minute, above %.0f%% for %s", psi.Some.Avg60, c.cfg.PSIThreshold, now.Sub(st.pressureSince).Round(time.Second)))
	return &ev
}
