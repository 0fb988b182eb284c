package logrules

import (
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

const (
	testUID  = "aa0e1c54-0b53-4d06-a4a5-7b6f4c3d2e1f"
	testUIDu = "aa0e1c54_0b53_4d06_a4a5_7b6f4c3d2e1f"
	testCID  = "5f4e3d2c1b0a99887766554433221100ffeeddccbbaa99887766554433221100"
)

func TestParseCgroupPath(t *testing.T) {
	tests := []struct {
		name          string
		path          string
		pod, containr string
	}{
		// cgroupfs driver; the layout is the same on cgroup v1 and v2.
		{"cgroupfs burstable", "/kubepods/burstable/pod" + testUID + "/" + testCID, testUID, testCID},
		{"cgroupfs besteffort", "/kubepods/besteffort/pod" + testUID + "/" + testCID, testUID, testCID},
		{"cgroupfs guaranteed", "/kubepods/pod" + testUID + "/" + testCID, testUID, testCID},
		{"cgroupfs pod level", "/kubepods/burstable/pod" + testUID, testUID, ""},
		{"cgroupfs trailing slash", "/kubepods/burstable/pod" + testUID + "/" + testCID + "/", testUID, testCID},
		{"cgroupfs no leading slash", "kubepods/burstable/pod" + testUID + "/" + testCID, testUID, testCID},
		{"cgroupfs cri-o container", "/kubepods/burstable/pod" + testUID + "/crio-" + testCID, testUID, testCID},
		{"cgroupfs under a node-level parent", "/kubelet.slice/kubepods/burstable/pod" + testUID + "/" + testCID, testUID, testCID},
		{"cgroupfs nested below container", "/kubepods/burstable/pod" + testUID + "/" + testCID + "/init", testUID, testCID},
		// systemd driver.
		{"systemd containerd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope", testUID, testCID},
		{"systemd containerd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope", testUID, testCID},
		{"systemd guaranteed", "/kubepods.slice/kubepods-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope", testUID, testCID},
		{"systemd docker", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/docker-" + testCID + ".scope", testUID, testCID},
		{"systemd cri-o", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/crio-" + testCID + ".scope", testUID, testCID},
		{"systemd cri-o conmon", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/crio-conmon-" + testCID + ".scope", testUID, testCID},
		{"systemd pod level", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice", testUID, ""},
		{"systemd pod dashes", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUID + ".slice/cri-containerd-" + testCID + ".scope", testUID, testCID},
		// Paths without a pod, and junk.
		{"empty", "", "", ""},
		{"root", "/", "", ""},
		{"node level", "/kubepods", "", ""},
		{"qos level", "/kubepods.slice/kubepods-burstable.slice", "", ""},
		{"user session", "/user.slice/user-0.slice/session-1.scope", "", ""},
		{"system service", "/system.slice/containerd.service", "", ""},
		{"plain docker", "/docker/" + testCID, "", ""},
		{"pod not a uid", "/kubepods/burstable/podnotauid/" + testCID, "", ""},
		{"pod uid too short", "/kubepods/burstable/pod" + testUID[:35] + "/" + testCID, "", ""},
		{"pod uid upper case", "/kubepods/burstable/pod" + strings.ToUpper(testUID) + "/" + testCID, "", ""},
		{"pod uid with a suffix", "/kubepods/burstable/pod" + testUID + "x/" + testCID, "", ""},
		{"static pod md5 uid", "/kubepods/burstable/pod6a4e5b54f6a2b6e2c5c0d8b0f0e0a1b2/" + testCID, "", ""},
		{"container id too short", "/kubepods/burstable/pod" + testUID + "/" + testCID[:63], testUID, ""},
		{"container id upper case", "/kubepods/burstable/pod" + testUID + "/" + strings.ToUpper(testCID), testUID, ""},
		{"container scope not hex", "/kubepods.slice/kubepods-pod" + testUIDu + ".slice/cri-containerd-xyz.scope", testUID, ""},
		{"separators", "////", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod, c := ParseCgroupPath(tt.path)
			if pod != tt.pod || c != tt.containr {
				t.Errorf("ParseCgroupPath(%q) = %q, %q; want %q, %q", tt.path, pod, c, tt.pod, tt.containr)
			}
		})
	}
}

// feedAll runs lines through e, one millisecond apart from start, and
// returns the findings.
func feedAll(e *Engine, start time.Time, lines ...string) []finding.Finding {
	var out []finding.Finding
	for i, l := range lines {
		out = e.Feed(Line{Text: l, Time: start.Add(time.Duration(i) * time.Millisecond)}, out)
	}
	return out
}

// oomEngine holds a rule for the kill line alone: the context lines before
// it are the engine's to read, whatever rules run.
func oomEngine(t *testing.T) *Engine {
	r := event("oom-kill", "OOMKilling", "Killed process", `Killed process \d+ \(`)
	r.Attribute = "oom"
	return newEngine(t, r)
}

func oomEvents(fs []finding.Finding) []finding.Finding {
	var out []finding.Finding
	for _, f := range fs {
		if f.Reason == "OOMKilling" {
			out = append(out, f)
		}
	}
	return out
}

func TestOOMAttribution(t *testing.T) {
	cgfs := "/kubepods/burstable/pod" + testUID + "/" + testCID
	sysd := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope"
	summary := func(memcg, task, pid string) string {
		return "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=" + memcg + ",task_memcg=" + memcg + ",task=" + task + ",pid=" + pid + ",uid=0"
	}
	tests := []struct {
		name  string
		lines []string
		// want holds, for each OOMKilling event, the substrings its message must have.
		want [][]string
		// not holds substrings no OOMKilling message may have.
		not []string
	}{
		{
			name: "3.x/4.x Task in line",
			lines: []string{
				"java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=999",
				"Task in " + cgfs + " killed as a result of limit of /kubepods/burstable/pod" + testUID,
				"Memory cgroup out of memory: Kill process 12001 (java) score 1996 or sacrifice child",
				"Killed process 12001 (java) total-vm:1204880kB, anon-rss:261644kB, file-rss:0kB, shmem-rss:0kB",
			},
			want: [][]string{{"Killed process 12001 (java)", "pod UID " + testUID, "container ID " + testCID, "memory cgroup " + cgfs}},
		},
		{
			name: "5.x summary line, systemd driver",
			lines: []string{
				summary(sysd, "memhog", "4242"),
				"Memory cgroup out of memory: Killed process 4242 (memhog) total-vm:1201244kB, anon-rss:1045248kB",
			},
			want: [][]string{{"Killed process 4242 (memhog)", "pod UID " + testUID, "container ID " + testCID}},
		},
		{
			name: "summary for another pid is not used",
			lines: []string{
				summary(sysd, "memhog", "4242"),
				"Memory cgroup out of memory: Killed process 9999 (other) total-vm:1kB",
			},
			want: [][]string{{"Killed process 9999 (other)"}},
			not:  []string{testUID},
		},
		{
			name: "context used once",
			lines: []string{
				summary(cgfs, "a", "1"),
				"Memory cgroup out of memory: Killed process 1 (a) total-vm:1kB",
				"Out of memory: Killed process 2 (b) total-vm:1kB",
			},
			want: [][]string{{"Killed process 1 (a)", testUID}, {"Killed process 2 (b)"}},
		},
		{
			name: "invoked oom-killer starts over",
			lines: []string{
				summary(cgfs, "a", "1"),
				"b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
				"Out of memory: Killed process 1 (a) total-vm:1kB",
			},
			want: [][]string{{"Killed process 1 (a)"}},
			not:  []string{testUID},
		},
		{
			name: "global OOM outside any pod",
			lines: []string{
				"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice/user-0.slice/session-1.scope,task=memhog,pid=2100,uid=0",
				"Out of memory: Killed process 2100 (memhog) total-vm:8388608kB",
			},
			want: [][]string{{"Killed process 2100 (memhog)", "memory cgroup /user.slice/user-0.slice/session-1.scope"}},
			not:  []string{"pod UID", "container ID"},
		},
		{
			name: "memory.oom.group kills the whole container once each",
			lines: []string{
				"stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=872",
				"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg=/kubepods.slice,task_memcg=" + sysd + ",task=stress,pid=68061,uid=0",
				"Memory cgroup out of memory: Killed process 68061 (stress) total-vm:4195088kB",
				"Tasks in " + sysd + " are going to be killed due to memory.oom.group set",
				"Memory cgroup out of memory: Killed process 68059 (stress) total-vm:780kB",
				"oom_reaper: reaped process 68061 (stress), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
				"Memory cgroup out of memory: Killed process 68060 (sh) total-vm:4195088kB",
				"Memory cgroup out of memory: Killed process 68061 (stress) total-vm:4195088kB",
			},
			want: [][]string{
				{"Killed process 68061 (stress)", "pod UID " + testUID, "container ID " + testCID},
				{"Killed process 68059 (stress)", "pod UID " + testUID, "container ID " + testCID},
				{"Killed process 68060 (sh)", "pod UID " + testUID, "container ID " + testCID},
			},
		},
		{
			name: "memory.oom.group at pod level, 4.19 without prefix",
			lines: []string{
				summary(cgfs, "a", "10"),
				"Killed process 10 (a) total-vm:1kB",
				"Tasks in /kubepods/burstable/pod" + testUID + " are going to be killed due to memory.oom.group set",
				"Killed process 11 (b) total-vm:1kB",
			},
			want: [][]string{
				{"Killed process 10 (a)", "container ID " + testCID},
				{"Killed process 11 (b)", "pod UID " + testUID},
			},
		},
		{
			name: "a later report is not part of the group",
			lines: []string{
				summary(cgfs, "a", "10"),
				"Killed process 10 (a) total-vm:1kB",
				"Tasks in " + cgfs + " are going to be killed due to memory.oom.group set",
				"x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
				"Out of memory: Killed process 10 (a) total-vm:1kB",
			},
			want: [][]string{{"Killed process 10 (a)", testUID}, {"Killed process 10 (a)"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := oomEvents(feedAll(oomEngine(t), time.Unix(1000, 0), tt.lines...))
			if len(got) != len(tt.want) {
				for _, f := range got {
					t.Logf("got %q", f.Message)
				}
				t.Fatalf("%d OOMKilling events, want %d", len(got), len(tt.want))
			}
			for i, subs := range tt.want {
				for _, s := range subs {
					if !strings.Contains(got[i].Message, s) {
						t.Errorf("event %d message %q lacks %q", i, got[i].Message, s)
					}
				}
				// The finding carries the pod UID its message names.
				wantUID := ""
				if strings.Contains(got[i].Message, "pod UID "+testUID) {
					wantUID = testUID
				}
				if got[i].PodUID != wantUID {
					t.Errorf("event %d PodUID %q, want %q", i, got[i].PodUID, wantUID)
				}
				// And the container ID, which the reporter names it by.
				wantCID := ""
				if strings.Contains(got[i].Message, "container ID "+testCID) {
					wantCID = testCID
				}
				if got[i].ContainerID != wantCID {
					t.Errorf("event %d ContainerID %q, want %q", i, got[i].ContainerID, wantCID)
				}
			}
			if tt.name == "a later report is not part of the group" && strings.Contains(got[1].Message, testUID) {
				t.Errorf("second report's kill %q kept the first report's group", got[1].Message)
			}
			for _, f := range got {
				for _, s := range tt.not {
					if strings.Contains(f.Message, s) {
						t.Errorf("message %q holds %q", f.Message, s)
					}
				}
			}
		})
	}
}

// TestOOMContextExpires: a context line too far from the kill line in log
// time, or after it, is not used.
func TestOOMContextExpires(t *testing.T) {
	ctx := "oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/kubepods/burstable/pod" + testUID + "/" + testCID + ",task=a,pid=1,uid=0"
	kill := "Memory cgroup out of memory: Killed process 1 (a) total-vm:1kB"
	t0 := time.Unix(5000, 0)
	tests := []struct {
		name   string
		gap    time.Duration
		wantID bool
	}{
		{"same instant", 0, true},
		{"within TTL", oomContextTTL, true},
		{"past TTL", oomContextTTL + time.Millisecond, false},
		{"kill before context", -time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := oomEngine(t)
			e.Feed(Line{Text: ctx, Time: t0}, nil)
			got := oomEvents(e.Feed(Line{Text: kill, Time: t0.Add(tt.gap)}, nil))
			if len(got) != 1 {
				t.Fatalf("%d events, want 1", len(got))
			}
			if has := strings.Contains(got[0].Message, testUID); has != tt.wantID {
				t.Errorf("message %q: pod UID present = %v, want %v", got[0].Message, has, tt.wantID)
			}
		})
	}
}
