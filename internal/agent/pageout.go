package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// releaseAfter is how long after start the agent gives back the pages of
// its binary that start-up touched: past the first list of its informers
// and the first round of every periodic check.
const releaseAfter = 30 * time.Second

// ReleaseStartupPagesAfter waits releaseAfter, then releases the start-up
// pages, unless ctx ends first.
func ReleaseStartupPagesAfter(ctx context.Context, log *zap.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(releaseAfter):
	}
	n, err := releaseStartupPages()
	if err != nil {
		log.Info("could not release all start-up pages", zap.Uint64("bytes", n), zap.Error(err))
		return
	}
	log.Info("released start-up pages", zap.Uint64("bytes", n))
}

// releaseStartupPages asks the kernel to reclaim the pages of the agent's
// binary that are mapped now. Start-up runs the init code of some 700
// packages spread over the whole binary, and the kernel maps each with its
// neighbours (read-around), so that an idle agent kept about 32 MiB of its
// binary resident, most of which it never runs again. The pages are clean
// copies of the file: the ones the agent does use come back on use.
//
// MADV_RANDOM as well, so that a page faulted back in brings only itself:
// with read-around, the code the periodic checks run pulled about 7 MiB of
// neighbours back in within a minute (idle RSS 27 against 20 MiB, measured
// with hack/bench). In a side-by-side run the first event after the release
// took 15 ms with it against 3 ms without, its code coming in a page at a
// time.
//
// The risk, and why --keep-startup-pages exists: code that must come back
// from the disk the binary is on cannot while that disk hangs. The kernel
// evicts the same pages under memory pressure anyway, so keeping them is a
// likelihood, not a guarantee.
//
// Only the binary's own mappings are advised, not libraries or files that
// libraries map (the journal's windows). A mapping the kernel refuses is
// skipped; the errors come back joined, with the bytes advised.
func releaseStartupPages() (uint64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("finding the agent's binary: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("reading the agent's mappings: %w", err)
	}
	defer f.Close()
	var (
		total    uint64
		firstErr error
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-01eee000 r-xp 00000000 fe:00 10010663 /path/to/nodeguard
		fields := strings.Fields(sc.Text())
		if len(fields) != 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if err := adviseRange(start, end); err != nil {
			firstErr = errors.Join(firstErr, fmt.Errorf("%s %s: %w", exe, fields[0], err))
			continue
		}
		total += end - start
	}
	if err := sc.Err(); err != nil {
		return total, fmt.Errorf("reading the agent's mappings: %w", err)
	}
	return total, firstErr
}

func adviseRange(start, end uint64) error {
	for _, advice := range []struct {
		name  string
		value int
	}{{"MADV_RANDOM", unix.MADV_RANDOM}, {"MADV_PAGEOUT", unix.MADV_PAGEOUT}} {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice.value)); errno != 0 {
			return fmt.Errorf("madvise(%s): %w", advice.name, errno)
		}
	}
	return nil
}
