package evidence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/prometheus/procfs"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Files are the files of a capture's directory, in the order they are
// written (and their share of the directory's cap given): the docs list
// them from here, and the tests hold the two in step.
var Files = []string{
	"condition.json", "pressure-cpu", "pressure-memory", "pressure-io", "meminfo",
	"processes.txt", "mountinfo", "kernel.log", "journal.log",
}

type file struct {
	name string
	// keepTail cuts the start rather than the end: a log's newest lines
	// are nearest the fault.
	keepTail bool
	data     func() []byte
}

// files gives each of Files its contents for one capture.
func (c *Capturer) files(job capture) []file {
	proc := c.opts.ProcPath
	since := job.at.Add(-c.opts.Window)
	var recentKernel, recentService *Ring
	if c.opts.Recent != nil {
		recentKernel, recentService = c.opts.Recent.Kernel, c.opts.Recent.Service
	}
	byName := map[string]file{
		"condition.json":  {data: func() []byte { return conditionJSON(job) }},
		"pressure-cpu":    {data: func() []byte { return readProc(filepath.Join(proc, "pressure", "cpu"), c.opts.MaxDirBytes) }},
		"pressure-memory": {data: func() []byte { return readProc(filepath.Join(proc, "pressure", "memory"), c.opts.MaxDirBytes) }},
		"pressure-io":     {data: func() []byte { return readProc(filepath.Join(proc, "pressure", "io"), c.opts.MaxDirBytes) }},
		"meminfo":         {data: func() []byte { return readProc(filepath.Join(proc, "meminfo"), c.opts.MaxDirBytes) }},
		"processes.txt":   {data: func() []byte { return topProcesses(proc, c.opts.TopProcesses) }},
		// The host's mount table as its first process sees it: what the
		// disk check reads.
		"mountinfo":  {data: func() []byte { return readProc(filepath.Join(proc, "1", "mountinfo"), c.opts.MaxDirBytes) }},
		"kernel.log": {keepTail: true, data: func() []byte { return logLines("the kernel", recentKernel, since, c.opts.Window) }},
		"journal.log": {keepTail: true, data: func() []byte {
			return logLines("the kubelet and container runtime units", recentService, since, c.opts.Window)
		}},
	}
	out := make([]file, len(Files))
	for i, name := range Files {
		f := byName[name]
		f.name = name
		out[i] = f
	}
	return out
}

// conditionJSON is the condition as the reporter had it when it turned
// True: the check, reason, message, the line it came from, and the check's
// facts.
func conditionJSON(job capture) []byte {
	b, err := json.MarshalIndent(struct {
		finding.Finding
		Since      time.Time `json:"since"`
		CapturedAt time.Time `json:"capturedAt"`
	}{job.cond.Finding, job.cond.Since, job.at}, "", "  ")
	if err != nil {
		return []byte(err.Error())
	}
	return append(b, '\n')
}

// readProc reads a /proc file, or says why it could not (no PSI on this
// kernel): a missing figure is part of the evidence, not a failed capture.
func readProc(path string, limit int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return []byte(fmt.Sprintf("not read: %v\n", err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return append(b, fmt.Sprintf("\nnot read past here: %v\n", err)...)
	}
	return b
}

// logLines prints the kept lines since the window's start, oldest first.
func logLines(what string, r *Ring, since time.Time, window time.Duration) []byte {
	var b bytes.Buffer
	if r == nil {
		fmt.Fprintf(&b, "# no lines of %s are kept: the check that reads them is off\n", what)
		return b.Bytes()
	}
	lines := r.Since(since)
	fmt.Fprintf(&b, "# %d lines of %s from the last %s, oldest first\n", len(lines), what, window)
	for _, l := range lines {
		b.WriteString(l.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
		b.WriteByte(' ')
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// proc is one process's figures for the top lists.
type proc struct {
	pid   int
	comm  string
	state string
	rss   int
	cpu   float64
}

// topProcesses lists the n processes using the most memory (RSS) and the
// n with the most CPU time, from /proc. The command line is left out: it
// may hold a secret passed as an argument.
func topProcesses(procPath string, n int) []byte {
	fs, err := procfs.NewFS(procPath)
	if err != nil {
		return []byte(fmt.Sprintf("not read: %v\n", err))
	}
	all, err := fs.AllProcs()
	if err != nil {
		return []byte(fmt.Sprintf("not read: %v\n", err))
	}
	var procs []proc
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			continue // gone since the listing
		}
		procs = append(procs, proc{pid: st.PID, comm: st.Comm, state: st.State, rss: st.ResidentMemory(), cpu: st.CPUTime()})
	}
	var b bytes.Buffer
	list := func(title string, less func(a, b proc) bool) {
		sort.SliceStable(procs, func(i, j int) bool { return less(procs[i], procs[j]) })
		fmt.Fprintf(&b, "%s (top %d of %d processes)\n", title, min(n, len(procs)), len(procs))
		tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "PID\tCOMMAND\tSTATE\tRSS_KIB\tCPU_SECONDS")
		for _, p := range procs[:min(n, len(procs))] {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.2f\n", p.pid, p.comm, p.state, p.rss>>10, p.cpu)
		}
		tw.Flush()
		b.WriteByte('\n')
	}
	list("by resident memory", func(a, b proc) bool { return a.rss > b.rss })
	list("by CPU time (user and system, since start)", func(a, b proc) bool { return a.cpu > b.cpu })
	return b.Bytes()
}
