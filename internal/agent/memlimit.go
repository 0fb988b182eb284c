package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// memoryLimitShare is the part of the container's memory limit the Go
// runtime is asked to keep the agent under. The rest is for what the runtime
// does not count and the cgroup does: libsystemd's allocations, the journal
// files it maps, the page cache the agent's reads leave charged to it.
const memoryLimitShare = 0.8

// noCgroupLimit is where "no limit" starts. Cgroup v1 reports no limit as
// the largest int64 rounded down to a page (9223372036854771712, less with
// 64 KiB pages); no real limit is anywhere near 1<<62, so everything from
// there up is taken as none.
const noCgroupLimit = 1 << 62

// ApplyCgroupMemoryLimit makes the container's memory limit the Go runtime's
// soft limit, unless GOMEMLIMIT is set. Without it the garbage collector
// lets the heap grow to twice what was live at the last collection,
// whatever the container's limit; after a burst (a flood of log lines, a
// large pod list) that can cross the limit, and the kernel OOM-kills the
// agent. With it the collector works harder near the limit instead.
func ApplyCgroupMemoryLimit(log *zap.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, path, err := cgroupMemoryLimit("/proc/self/cgroup", "/sys/fs/cgroup")
	if err != nil {
		log.Info("no memory limit taken from the cgroup", zap.Error(err))
		return
	}
	if limit == 0 {
		return
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	log.Info("Go memory limit set from the cgroup's", zap.String("cgroup", path), zap.Uint64("cgroup_limit_bytes", limit), zap.Int64("go_limit_bytes", soft))
}

// cgroupMemoryLimit returns the lowest memory limit set on the memory cgroup
// this process is in and its ancestors, and the file it came from; 0 when
// none is set. procCgroup is /proc/self/cgroup; mountRoot holds the cgroup
// mounts (cgroup v1's memory controller at mountRoot/memory, v2's unified
// hierarchy at mountRoot).
func cgroupMemoryLimit(procCgroup, mountRoot string) (uint64, string, error) {
	f, err := os.Open(procCgroup)
	if err != nil {
		return 0, "", fmt.Errorf("finding the agent's cgroup: %w", err)
	}
	defer f.Close()
	var v1Path, v2Path string
	found := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		// hierarchy-ID:controllers:path, e.g. "4:memory:/kubepods/pod1" (v1)
		// or "0::/kubepods.slice/..." (v2).
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			return 0, "", fmt.Errorf("%s line %d: want hierarchy:controllers:path, got %q", procCgroup, n, sc.Text())
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			v1Path, found = parts[2], true
		case parts[0] == "0" && parts[1] == "":
			v2Path = parts[2]
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", fmt.Errorf("reading %s: %w", procCgroup, err)
	}
	// A memory controller on a v1 hierarchy wins: in a hybrid layout the v2
	// hierarchy has no memory controller.
	base, rel, file := filepath.Join(mountRoot, "memory"), v1Path, "memory.limit_in_bytes"
	if !found {
		base, rel, file = mountRoot, v2Path, "memory.max"
	}
	// In a container without its own cgroup namespace the path is the
	// host's, while the mount shows the container's cgroup at its root. A
	// path outside the namespace's root ("/../x") is not ours to read
	// either.
	dir := filepath.Join(base, rel)
	if _, err := os.Stat(dir); err != nil || !within(base, dir) {
		dir = base
	}
	var (
		lowest uint64
		from   string
	)
	for {
		limit, err := readCgroupLimit(filepath.Join(dir, file))
		if err != nil {
			return 0, "", err
		}
		if limit > 0 && (lowest == 0 || limit < lowest) {
			lowest, from = limit, filepath.Join(dir, file)
		}
		parent := filepath.Dir(dir)
		if dir == base || parent == dir || !within(base, parent) {
			break
		}
		dir = parent
	}
	return lowest, from, nil
}

// within says whether path is base or below it.
func within(base, path string) bool {
	rel, err := filepath.Rel(base, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// readCgroupLimit reads one memory limit file; 0 means no limit. A missing
// file is no limit too: the root of a v2 hierarchy has no memory.max.
func readCgroupLimit(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the memory limit: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s line 1: the memory limit %q is not a number of bytes or max: %w", path, s, err)
	}
	if v >= noCgroupLimit {
		return 0, nil
	}
	return v, nil
}
