package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseStartupPages asks the kernel to reclaim the pages of the agent's
// binary and libraries that are mapped now. Start-up runs the init code of
// some 700 packages spread over the whole binary, and the kernel maps each
// with its neighbours (read-around), so that an idle agent would keep about
// 30 MiB of its binary resident, most of which it never runs again. The
// pages are clean copies of files: the ones the agent does use come back on
// use. Pages other processes map too (libc) are left alone by the kernel.
//
// MADV_RANDOM as well, so that a page faulted back in brings only itself:
// with read-around, the code the periodic checks run pulled about 7 MiB of
// neighbours back in within a minute (idle RSS 27 against 20 MiB, measured
// with hack/bench). The price is paid once, by the first event after the
// release, whose code comes in a page per read: 15 ms against 3 ms here,
// more on a slow root disk. Returns the bytes advised.
func releaseStartupPages() (uint64, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("reading the agent's mappings: %w", err)
	}
	defer f.Close()
	var total uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-01eee000 r-xp 00000000 fe:00 10010663 /path/to/nodeguard
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") || strings.Contains(fields[1], "w") {
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
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_PAGEOUT} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), uintptr(advice)); errno != 0 {
				return total, fmt.Errorf("madvise(%d) on %s %s: %w", advice, fields[5], fields[0], errno)
			}
		}
		total += end - start
	}
	if err := sc.Err(); err != nil {
		return total, fmt.Errorf("reading the agent's mappings: %w", err)
	}
	return total, nil
}
