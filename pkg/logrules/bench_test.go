package logrules

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// benchLines is how many lines one benchmark log holds.
const benchLines = 120_000

// benignShapes make the lines a busy Kubernetes node logs all day: pod
// network plumbing, audit, overlayfs, IPVS, mounts, NIC and disk chatter, user
// processes crashing. Several hold a rule's literal (link, nvme, XFS (, EDAC,
// general protection fault, I/O error, stall) and so run its pattern.
var benignShapes = []func(r *rand.Rand) string{
	func(r *rand.Rand) string {
		return fmt.Sprintf("cni0: port %d(veth%08x) entered blocking state", r.IntN(64), r.Uint32())
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("cni0: port %d(veth%08x) entered disabled state", r.IntN(64), r.Uint32())
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("cni0: port %d(veth%08x) entered forwarding state", r.IntN(64), r.Uint32())
	},
	func(r *rand.Rand) string { return fmt.Sprintf("device veth%08x entered promiscuous mode", r.Uint32()) },
	func(r *rand.Rand) string { return fmt.Sprintf("device veth%08x left promiscuous mode", r.Uint32()) },
	func(r *rand.Rand) string {
		return fmt.Sprintf("IPv6: ADDRCONF(NETDEV_CHANGE): veth%08x: link becomes ready", r.Uint32())
	},
	func(r *rand.Rand) string { return "IPv6: ADDRCONF(NETDEV_UP): eth0: link is not ready" },
	func(r *rand.Rand) string { return fmt.Sprintf("eth0: renamed from tmp%05x", r.IntN(1<<20)) },
	func(r *rand.Rand) string {
		return fmt.Sprintf("docker0: port %d(veth%07x) entered disabled state", r.IntN(8), r.IntN(1<<28))
	},
	func(r *rand.Rand) string {
		pid := 1000 + r.IntN(60000)
		return fmt.Sprintf(`audit: type=1400 audit(%d.%03d:%d): apparmor="DENIED" operation="open" profile="cri-containerd.apparmor.d" name="/proc/%d/mounts" pid=%d comm="node" requested_mask="r" denied_mask="r" fsuid=1000 ouid=0`,
			1700000000+r.IntN(1e6), r.IntN(1000), r.IntN(1e5), pid, pid)
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("kauditd_printk_skb: %d callbacks suppressed", 1+r.IntN(40))
	},
	func(r *rand.Rand) string {
		return "overlayfs: upperdir is in-use as upperdir/workdir of another mount, accessing files from both mounts will result in undefined behavior."
	},
	func(r *rand.Rand) string { return "IPVS: rr: TCP 10.96.0.1:443 - no destination available" },
	func(r *rand.Rand) string { return fmt.Sprintf("IPVS: Creating netns size=2048 id=%d", r.IntN(5000)) },
	func(r *rand.Rand) string {
		return fmt.Sprintf("TCP: request_sock_TCP: Possible SYN flooding on port %d. Sending cookies.  Check SNMP counters.", 1024+r.IntN(60000))
	},
	func(r *rand.Rand) string { return fmt.Sprintf("net_ratelimit: %d callbacks suppressed", 1+r.IntN(500)) },
	func(r *rand.Rand) string {
		return fmt.Sprintf("loop%d: detected capacity change from 0 to %d", r.IntN(16), 8*r.IntN(1<<20))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("EXT4-fs (loop%d): mounted filesystem without journal. Opts: (null). Quota mode: none.", r.IntN(16))
	},
	func(r *rand.Rand) string {
		return "EXT4-fs (nvme0n1p1): re-mounted. Opts: discard,errors=remount-ro. Quota mode: none."
	},
	func(r *rand.Rand) string { return fmt.Sprintf("XFS (dm-%d): Mounting V5 Filesystem", r.IntN(8)) },
	func(r *rand.Rand) string { return fmt.Sprintf("XFS (dm-%d): Ending clean mount", r.IntN(8)) },
	func(r *rand.Rand) string { return fmt.Sprintf("XFS (dm-%d): Unmounting Filesystem", r.IntN(8)) },
	func(r *rand.Rand) string {
		return fmt.Sprintf("nvme nvme%d: %d/0/0 default/read/poll queues", r.IntN(4), 2+r.IntN(30))
	},
	func(r *rand.Rand) string {
		return "ixgbe 0000:03:00.0 eth2: NIC Link is Up 10 Gbps, Flow Control: RX/TX"
	},
	func(r *rand.Rand) string { return "mlx5_core 0000:5e:00.0 ens1f0np0: Link up" },
	func(r *rand.Rand) string { return "ata3: SATA link down (SStatus 0 SControl 300)" },
	func(r *rand.Rand) string {
		return fmt.Sprintf("traps: node[%d] general protection fault ip:%x sp:%x error:0 in node[%x+4a2c000]", r.IntN(1<<22), r.Uint64()>>16, r.Uint64()>>16, r.Uint64()>>20)
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("python3[%d]: segfault at 0 ip %016x sp %016x error 4 in libc.so.6[%x+195000]", r.IntN(1<<22), r.Uint64()>>16, r.Uint64()>>16, r.Uint64()>>20)
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("Buffer I/O error on dev sr0, logical block %d, async page read", r.IntN(1<<20))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("oom_reaper: reaped process %d (worker), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB", r.IntN(1<<22))
	},
	func(r *rand.Rand) string {
		return "rcu: \tRCU CPU stall warnings timeout set to 21 (rcu_cpu_stall_timeout)."
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("perf: interrupt took too long (%d > %d), lowering kernel.perf_event_max_sample_rate to %d", 2500+r.IntN(5000), 2500, 25000+r.IntN(50000))
	},
	func(r *rand.Rand) string { return fmt.Sprintf("hrtimer: interrupt took %d ns", 100000+r.IntN(1e6)) },
	func(r *rand.Rand) string { return "EDAC MC: Ver: 3.0.0" },
	func(r *rand.Rand) string {
		return "nf_conntrack: default automatic helper assignment has been turned off for security reasons and CT-based  firewall rule not found. Use the iptables CT target to attach helpers instead."
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("process 'runc' launched '/proc/self/fd/%d' with NULL argv: empty string added", 3+r.IntN(10))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("systemd-journald[%d]: /dev/kmsg buffer overrun, some messages lost.", 300+r.IntN(200))
	},
	func(r *rand.Rand) string {
		return `"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.`
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("  node %d: slabs: %d, objs: %d, free: 0", r.IntN(2), r.IntN(5000), r.IntN(80000))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("Memory cgroup stats for /kubepods/burstable/pod%08x-0229-4753-8479-23543310a834:", r.Uint32())
	},
	func(r *rand.Rand) string { return "---[ end trace 0000000000000000 ]---" },
}

// problemLines are the positive cases of the default rules.
func problemLines() []string {
	var out []string
	for _, c := range ruleCases {
		if c.match {
			out = append(out, c.line)
		}
	}
	return out
}

// benchLog builds a log of n lines 5ms apart; problemEvery > 0 makes one line
// in problemEvery a problem line.
func benchLog(n, problemEvery int) []Line {
	r := rand.New(rand.NewPCG(1, 2))
	problems := problemLines()
	t0 := time.Unix(1_700_000_000, 0)
	lines := make([]Line, n)
	for i := range lines {
		var text string
		if problemEvery > 0 && r.IntN(problemEvery) == 0 {
			text = problems[r.IntN(len(problems))]
		} else {
			text = benignShapes[r.IntN(len(benignShapes))](r)
		}
		lines[i] = Line{Text: text, Time: t0.Add(time.Duration(i) * 5 * time.Millisecond)}
	}
	return lines
}

// feedBench feeds the whole log per op, later passes later in time so that
// windows and groups behave as in one long log.
func feedBench(b *testing.B, lines []Line) {
	e, err := NewEngine(DefaultRules(), DefaultConditions())
	if err != nil {
		b.Fatal(err)
	}
	span := lines[len(lines)-1].Time.Sub(lines[0].Time) + time.Second
	out := make([]checks.Finding, 0, 16)
	var findings int
	// One pass before timing, so that the regexps' machines are warm.
	for _, l := range lines {
		out = e.Feed(l, out[:0])
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		shift := time.Duration(i+1) * span
		for _, l := range lines {
			l.Time = l.Time.Add(shift)
			out = e.Feed(l, out[:0])
			findings += len(out)
		}
	}
	b.StopTimer()
	total := float64(b.N) * float64(len(lines))
	b.ReportMetric(total/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/line")
	b.ReportMetric(float64(findings)/float64(b.N), "findings/op")
}

// BenchmarkEngineFeed: 120k lines, about 1% of them problems.
func BenchmarkEngineFeed(b *testing.B) {
	feedBench(b, benchLog(benchLines, 100))
}

// BenchmarkEngineFeedBenign: 120k benign lines, which must allocate nothing.
func BenchmarkEngineFeedBenign(b *testing.B) {
	feedBench(b, benchLog(benchLines, 0))
}

// TestBenchLogBenign keeps the benign benchmark honest: its lines make no
// finding, and the mixed log's problem lines do.
func TestBenchLogBenign(t *testing.T) {
	e := defaultEngine(t)
	var out []checks.Finding
	for _, l := range benchLog(20_000, 0) {
		if out = e.Feed(l, out[:0]); len(out) > 0 {
			t.Fatalf("benign bench line %q made %v", l.Text, reasonsOf(out))
		}
	}
	n := 0
	for _, l := range benchLog(20_000, 100) {
		n += len(e.Feed(l, out[:0]))
	}
	if n < 100 {
		t.Errorf("the mixed log made only %d findings", n)
	}
}
