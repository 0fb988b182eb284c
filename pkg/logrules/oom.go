package logrules

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// oomContext carries what the lines before an OOM kill said about it, so that
// the "Killed process" line can be reported once with the victim's cgroup.
// Newer kernels print an "oom-kill:" summary with task_memcg, task and pid;
// older ones print "Task in CGROUP killed as a result of limit of CGROUP".
//
// With memory.oom.group set (the kubelet sets it on cgroup v2), the kernel
// kills the victim, prints "Tasks in CGROUP are going to be killed due to
// memory.oom.group set", and kills every task of CGROUP, printing the
// victim's kill line a second time.
type oomContext struct {
	memcg string
	task  string
	pid   string
	at    time.Time
	// group is set when memcg is a memory.oom.group being killed: it holds
	// for every kill that follows, not only the next.
	group bool
	// victim is the pid of the report's first kill and when it was logged.
	victim   string
	victimAt time.Time
	// constraint is the kernel's word for what ran out (CONSTRAINT_MEMCG,
	// CONSTRAINT_NONE for the whole machine, ...), and limit the memory
	// cgroup's limit from its "memory: usage U, limit L" line.
	constraint string
	limit      string
	// dumping is set from the report's first line to its kill: only then is
	// a line looked at for the limit, which the benign line never pays for.
	dumping bool
}

// oomContextTTL bounds how far apart, in log time, the context line and the
// kill line of one OOM report may be.
const oomContextTTL = 30 * time.Second

// oomUsage begins a memory cgroup's usage line in an OOM report.
const oomUsage = "memory: usage "

// observe takes what a line tells of an OOM kill, copying what it keeps:
// the line's text may be a reader's buffer. The caller has searched
// the line already: mentions says it holds "oom" or "Task", which every
// line observe looks further at holds, and usage that it holds oomUsage.
func (o *oomContext) observe(text string, at time.Time, mentions, usage bool) {
	if o.dumping && o.limit == "" && usage {
		// The memory cgroup's usage line; the memory+swap and kmem lines
		// after it start otherwise.
		if _, rest, ok := strings.Cut(text, oomUsage); ok && !strings.Contains(text, "+swap") {
			rest = strings.Clone(rest) // the context outlives the line
			_, lim, _ := strings.Cut(rest, "limit ")
			o.limit, _, _ = strings.Cut(lim, ",")
			return
		}
	}
	if !mentions {
		return
	}
	switch {
	case strings.Contains(text, "invoked oom-killer:"):
		*o = oomContext{at: at, dumping: true}
	case strings.Contains(text, "oom-kill:"):
		_, fields, _ := strings.Cut(text, "oom-kill:")
		fields = strings.Clone(fields)
		// The limit came earlier in the same dump, if this is one.
		limit := ""
		if o.dumping {
			limit = o.limit
		}
		*o = oomContext{at: at, dumping: true, limit: limit}
		for kv := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "task_memcg":
				o.memcg = v
			case "task":
				o.task = v
			case "pid":
				o.pid = v
			case "constraint":
				o.constraint = v
			}
		}
	case strings.Contains(text, "Task in ") && strings.Contains(text, " killed as a result of limit of "):
		_, rest, _ := strings.Cut(text, "Task in ")
		memcg, _, _ := strings.Cut(rest, " killed as a result of limit of ")
		memcg = strings.Clone(memcg)
		// Only a memory cgroup's limit kills this way.
		*o = oomContext{memcg: memcg, at: at, dumping: true, constraint: "CONSTRAINT_MEMCG"}
	case strings.Contains(text, "Tasks in ") && strings.Contains(text, oomGroupKill):
		_, rest, _ := strings.Cut(text, "Tasks in ")
		memcg, _, _ := strings.Cut(rest, oomGroupKill)
		memcg = strings.Clone(memcg)
		*o = oomContext{memcg: memcg, at: at, group: true, victim: o.victim, victimAt: o.victimAt,
			constraint: o.constraint, limit: o.limit}
	}
}

// constraintWords says a kernel constraint the way the message does.
var constraintWords = map[string]string{
	"CONSTRAINT_NONE":          "global",
	"CONSTRAINT_MEMCG":         "memcg",
	"CONSTRAINT_CPUSET":        "cpuset",
	"CONSTRAINT_MEMORY_POLICY": "memory policy",
}

const oomGroupKill = " are going to be killed due to memory.oom.group"

// repeat reports whether a kill line only repeats the kill of the victim
// already reported, as a memory.oom.group kill does.
func (o *oomContext) repeat(text string, at time.Time) bool {
	if !o.group || o.victim == "" || at.Sub(o.victimAt) > oomContextTTL || at.Before(o.victimAt) {
		return false
	}
	m := killedProcess.FindStringSubmatch(text)
	return m != nil && m[1] == o.victim
}

var killedProcess = regexp.MustCompile(`Killed process (\d+) \(([^)]*)\)`)

// describe adds the victim's cgroup, pod and container to the kill line's
// message when the context belongs to this kill, returns the pod's UID and
// the container's ID where the cgroup shows them, and then forgets the context, unless it is a
// memory.oom.group's, which holds for each kill of the group.
func (o *oomContext) describe(msg string, at time.Time) (text, podUID, containerID string) {
	ctx := *o
	m := killedProcess.FindStringSubmatch(msg)
	if !ctx.group {
		// The constraint and limit stay for a memory.oom.group's kills,
		// which follow the victim's with no dump of their own.
		*o = oomContext{constraint: ctx.constraint, limit: ctx.limit}
		if m != nil {
			o.victim, o.victimAt = m[1], at
		}
	}
	if ctx.memcg == "" || at.Sub(ctx.at) > oomContextTTL || at.Before(ctx.at) {
		return msg, "", ""
	}
	if m != nil && ctx.pid != "" && ctx.pid != m[1] {
		return msg, "", ""
	}
	var b strings.Builder
	b.WriteString(msg)
	fmt.Fprintf(&b, "; memory cgroup %s", ctx.memcg)
	pod, container := ParseCgroupPath(ctx.memcg)
	if pod != "" {
		fmt.Fprintf(&b, "; pod UID %s", pod)
	}
	if container != "" {
		fmt.Fprintf(&b, "; container ID %s", container)
	}
	if w := constraintWords[ctx.constraint]; w != "" {
		fmt.Fprintf(&b, "; constraint %s", w)
	}
	if ctx.limit != "" {
		fmt.Fprintf(&b, "; memcg limit %s", ctx.limit)
	}
	return b.String(), pod, container
}

var (
	podSegment = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)
	hexID      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ParseCgroupPath finds the pod UID and container ID in a kubelet-made cgroup
// path, in each layout kubelets use: the cgroupfs driver
// (/kubepods/burstable/pod<uid>/<id>) on cgroup v1 and v2, and the systemd
// driver (kubepods-burstable-pod<uid_with_underscores>.slice/
// cri-containerd-<id>.scope, or docker-/crio- scopes). The UID comes back with
// dashes; either result is empty when the path does not hold it.
func ParseCgroupPath(path string) (podUID, containerID string) {
	segments := strings.Split(strings.Trim(path, "/"), "/")
	for i, seg := range segments {
		m := podSegment.FindStringSubmatch(seg)
		if m == nil {
			continue
		}
		podUID = strings.ReplaceAll(m[1], "_", "-")
		if i+1 < len(segments) {
			id := segments[i+1]
			id = strings.TrimSuffix(id, ".scope")
			if dash := strings.LastIndexByte(id, '-'); dash >= 0 {
				id = id[dash+1:]
			}
			if hexID.MatchString(id) {
				containerID = id
			}
		}
		return podUID, containerID
	}
	return "", ""
}
