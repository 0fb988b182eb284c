package memcg

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

type host struct {
	t          *testing.T
	proc, root string
}

func newHost(t *testing.T) *host {
	h := &host{t: t, proc: t.TempDir(), root: t.TempDir()}
	os.MkdirAll(filepath.Join(h.proc, "pressure"), 0o755)
	return h
}

func (h *host) write(path, content string) {
	h.t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) v1(kernelCount int, dirs ...string) {
	h.write(filepath.Join(h.proc, "cgroups"), "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t9\t1\nmemory\t4\t"+strconv.Itoa(kernelCount)+"\t1\n")
	h.write(filepath.Join(h.root, "memory/memory.usage_in_bytes"), "0\n")
	for _, d := range dirs {
		os.MkdirAll(filepath.Join(h.root, "memory", d), 0o755)
	}
}

func (h *host) meminfo(sunreclaimKB uint64) {
	h.write(filepath.Join(h.proc, "meminfo"), "MemTotal:       16000000 kB\nSUnreclaim:     "+strconv.FormatUint(sunreclaimKB, 10)+" kB\n")
}

func (h *host) psi(avg60 string) {
	h.write(filepath.Join(h.proc, "pressure/memory"), "some avg10=0.00 avg60="+avg60+" avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1\n")
}

func (h *host) check(cfg *Config, now *time.Time) *Check {
	h.t.Helper()
	cfg.CgroupRoot = h.root
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(h.t), ProcPath: h.proc, Now: func() time.Time { return *now }})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func leak(fs []finding.Finding) finding.Finding {
	for _, f := range fs {
		if f.Type == finding.MemoryCgroupLeak.Type {
			return f
		}
	}
	return finding.Finding{}
}

func TestZombieMemoryCgroups(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *host)
		status finding.Status
		msg    string
	}{
		{"v1 few zombies", func(h *host) { h.v1(5, "kubepods", "kubepods/pod1", "system.slice") }, finding.StatusFalse, ""},
		{"v1 many zombies", func(h *host) { h.v1(104, "kubepods", "kubepods/pod1", "system.slice") }, finding.StatusTrue, "100 memory cgroups are dying but not freed (the kernel counts 104"},
		{"v2 dying descendants", func(h *host) {
			h.write(filepath.Join(h.root, "cgroup.stat"), "nr_descendants 40\nnr_dying_descendants 150\n")
		}, finding.StatusTrue, "150 memory cgroups are dying but not freed (cgroup v2 nr_dying_descendants)"},
		{"hybrid: memory on v1, counted there", func(h *host) {
			h.v1(110, "kubepods")
			h.write(filepath.Join(h.root, "unified/cgroup.stat"), "nr_descendants 4\nnr_dying_descendants 3\n")
		}, finding.StatusTrue, "108 memory cgroups are dying but not freed (the kernel counts 110"},
		{"no cgroups at all", func(h *host) {}, finding.StatusFalse, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			tt.setup(h)
			cfg := DefaultConfig()
			cfg.ZombieThreshold = 100
			now := time.Unix(1000, 0)
			got, err := h.check(cfg, &now).probe(&state{})
			if err != nil {
				t.Fatal(err)
			}
			f := leak(got)
			if f.Status != tt.status || !strings.Contains(f.Message, tt.msg) {
				t.Errorf("MemoryCgroupLeak = %s %q, want %s holding %q", f.Status, f.Message, tt.status, tt.msg)
			}
		})
	}
}

func TestSlabGrowthMustBeSteady(t *testing.T) {
	h := newHost(t)
	cfg := DefaultConfig()
	cfg.SlabGrowthBytes = 100 << 20
	cfg.SlabWindow = finding.Duration{Duration: 10 * time.Minute}
	now := time.Unix(1000, 0)
	c := h.check(cfg, &now)
	st := &state{}
	step := func(kb uint64) finding.Finding {
		h.meminfo(kb)
		now = now.Add(time.Minute)
		got, err := c.probe(st)
		if err != nil {
			t.Fatal(err)
		}
		return leak(got)
	}
	// One jump is not a leak.
	step(100_000)
	step(100_000)
	if f := step(300_000); f.Status != finding.StatusFalse {
		t.Errorf("one jump: %s %q, want False", f.Status, f.Message)
	}
	// Steady growth of 30 MiB a minute for five minutes is.
	st.slab = nil
	var f finding.Finding
	for i := range 6 {
		f = step(uint64(300_000 + i*30_000))
	}
	if f.Status != finding.StatusTrue || !strings.Contains(f.Message, "unreclaimable slab grew by") {
		t.Errorf("steady growth: %s %q, want True", f.Status, f.Message)
	}
}

func TestMemoryPressureEventOncePerEpisode(t *testing.T) {
	h := newHost(t)
	cfg := DefaultConfig()
	cfg.PSIDuration = finding.Duration{Duration: 2 * time.Minute}
	now := time.Unix(1000, 0)
	c := h.check(cfg, &now)
	st := &state{}
	events := 0
	for _, avg := range []string{"50.00", "55.00", "60.00", "70.00", "5.00", "40.00", "40.00", "40.00"} {
		h.psi(avg)
		now = now.Add(time.Minute)
		got, _ := c.probe(st)
		for _, f := range got {
			if f.Reason == "MemoryPressureHigh" {
				events++
			}
		}
	}
	if events != 2 {
		t.Errorf("%d MemoryPressureHigh events, want 2 (one per episode held for 2m)", events)
	}
}
