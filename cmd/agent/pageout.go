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
// own binary that are mapped now. Start-up runs the init code of some 700
// packages spread over the whole binary, and the kernel maps each of them
// with its neighbours (read-around), so that an idle agent would keep about
// 30 MiB of its binary resident of which it no longer runs most. The pages
// are clean copies of the file: the ones the agent does use come back on
// their next use, from the page cache or the disk. Returns the bytes
// advised.
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
	var total uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-01eee000 r-xp 00000000 fe:00 10010663 /path/to/nodeguard
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
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
		// Only MADV_PAGEOUT: MADV_RANDOM as well would keep a few more
		// pages out, but the first event after a quiet spell would then
		// fault its code in a page at a time, each a disk read.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); errno != 0 {
			return total, fmt.Errorf("madvise(MADV_PAGEOUT) on %s %s: %w", exe, fields[0], errno)
		}
		total += end - start
	}
	if err := sc.Err(); err != nil {
		return total, fmt.Errorf("reading the agent's mappings: %w", err)
	}
	return total, nil
}
