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
type oomContext struct {
	memcg string
	task  string
	pid   string
	at    time.Time
}

// oomContextTTL bounds how far apart, in log time, the context line and the
// kill line of one OOM report may be.
const oomContextTTL = 30 * time.Second

func (o *oomContext) observe(text string, at time.Time) {
	switch {
	case strings.Contains(text, "invoked oom-killer:"):
		*o = oomContext{at: at}
	case strings.Contains(text, "oom-kill:"):
		_, fields, _ := strings.Cut(text, "oom-kill:")
		*o = oomContext{at: at}
		for kv := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "task_memcg":
				o.memcg = v
			case "task":
				o.task = v
			case "pid":
				o.pid = v
			}
		}
	case strings.Contains(text, "Task in ") && strings.Contains(text, " killed as a result of limit of "):
		_, rest, _ := strings.Cut(text, "Task in ")
		memcg, _, _ := strings.Cut(rest, " killed as a result of limit of ")
		*o = oomContext{memcg: memcg, at: at}
	}
}

var killedProcess = regexp.MustCompile(`Killed process (\d+) \(([^)]*)\)`)

// describe adds the victim's cgroup, pod and container to the kill line's
// message when the context belongs to this kill, returns the pod's UID if
// the cgroup shows one, and then forgets the context.
func (o *oomContext) describe(msg string, at time.Time) (string, string) {
	defer func() { *o = oomContext{} }()
	if o.memcg == "" || at.Sub(o.at) > oomContextTTL || at.Before(o.at) {
		return msg, ""
	}
	if m := killedProcess.FindStringSubmatch(msg); m != nil && o.pid != "" && o.pid != m[1] {
		return msg, ""
	}
	var b strings.Builder
	b.WriteString(msg)
	fmt.Fprintf(&b, "; memory cgroup %s", o.memcg)
	pod, container := ParseCgroupPath(o.memcg)
	if pod != "" {
		fmt.Fprintf(&b, "; pod UID %s", pod)
	}
	if container != "" {
		fmt.Fprintf(&b, "; container ID %s", container)
	}
	return b.String(), pod
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
