package testproc

import "github.com/prometheus/procfs"

// InGroup lists the processes of process group pgid that have not exited
// (zombies left out), from /proc: how a test sees that a process group it
// expects killed is gone.
func InGroup(pgid int) []int {
	procs, _ := procfs.AllProcs()
	var out []int
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.State != "Z" && st.PGRP == pgid {
			out = append(out, p.PID)
		}
	}
	return out
}
