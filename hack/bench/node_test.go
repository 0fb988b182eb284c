package main

import (
	"testing"
	"time"
)

func TestClassifyRecord(t *testing.T) {
	const memcg = "oom_memcg=/nodeguard-bench-oom-27677/"
	for _, tc := range []struct {
		name, rec string
		pid       int
		full      bool
	}{
		{"a kill's line", "3,5012,920318981,-;Memory cgroup out of memory: Killed process 28152 (tail) total-vm:6740kB, anon-rss:3968kB, file-rss:1548kB, shmem-rss:0kB, UID:0 pgtables:56kB oom_score_adj:0\n", 28152, false},
		{"the storm's full report's summary", "6,5011,920318956,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/nodeguard-bench-oom-27677/26,task_memcg=/nodeguard-bench-oom-27677/26,task=tail,pid=28152,uid=0\n", 0, true},
		{"another cgroup's summary", "6,5011,920318956,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/burstable/pod1,task_memcg=/kubepods/burstable/pod1/c1,task=hog,pid=9,uid=0\n", 0, false},
		{"continuation lines", "6,5011,920318956,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/nodeguard-bench-oom-27677/1,pid=1,uid=0\n SUBSYSTEM=memory\n DEVICE=x\n", 0, true},
		{"the header", "4,4900,920325432,-;tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n", 0, false},
		{"a global OOM kill", "3,7,1,-;Out of memory: Killed process 4242 (java) total-vm:1kB\n", 4242, false},
		{"a line quoting it, later in the record", "6,8,1,-;benign\n Killed process 5 (x)\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid, full := classifyRecord(tc.rec, memcg)
			if pid != tc.pid || full != tc.full {
				t.Errorf("classifyRecord = %d, %v; want %d, %v", pid, full, tc.pid, tc.full)
			}
		})
	}
}

func TestByMinute(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	for _, tc := range []struct {
		name  string
		times []time.Time
		want  string
	}{
		{"none", nil, ""},
		{"one minute", []time.Time{at(0), at(59.9)}, "2"},
		{"two minutes", []time.Time{at(1), at(60), at(61), at(119)}, "1,3"},
		{"an empty minute between", []time.Time{at(1), at(130)}, "1,0,1"},
		{"just before the start", []time.Time{at(-0.1)}, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := byMinute(start, tc.times); got != tc.want {
				t.Errorf("byMinute = %q, want %q", got, tc.want)
			}
		})
	}
}
