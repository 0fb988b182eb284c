// Package benchlog generates realistic kernel logs for benchmarks: many
// shapes of benign lines a busy node logs, and problem lines of every
// reason.
package benchlog

import (
	"fmt"
	"math/rand/v2"
)

// BenignShapes make the lines a busy Kubernetes node logs all day: pod
// network plumbing, audit, overlayfs, IPVS, mounts, NIC and disk chatter, user
// processes crashing. Several hold a rule's literal (link, nvme, XFS (, EDAC,
// general protection fault, I/O error, stall) and so run its pattern.
var BenignShapes = []func(r *rand.Rand) string{
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

// ProblemLines are kernel problem lines of every built-in reason.
var ProblemLines = []string{
	"Out of memory: Killed process 2100 (memhog) total-vm:8388608kB, anon-rss:8100000kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:16000kB oom_score_adj:0",
	"Memory cgroup out of memory: Killed process 12001 (node) total-vm:1204880kB, anon-rss:261644kB, file-rss:0kB, shmem-rss:0kB",
	"Kernel panic - not syncing: Fatal exception",
	"BUG: kernel NULL pointer dereference, address: 0000000000000008",
	"general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP NOPTI",
	"kernel BUG at mm/slub.c:305!",
	"INFO: task containerd:870 blocked for more than 120 seconds.",
	"INFO: task java:3311 blocked for more than 120 seconds.",
	"watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [java:20111]",
	"rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
	"blk_update_request: I/O error, dev xvdf, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 32 prio class 0",
	"Buffer I/O error on dev dm-0, logical block 154321, lost async page write",
	"EXT4-fs error (device xvdf): ext4_find_entry:1436: inode #2: comm kubelet: reading directory lblock 0",
	"EXT4-fs warning (device nvme1n1p1): ext4_end_bio:343: I/O error 10 writing to inode 12",
	"XFS (dm-0): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x2 len 1 error 5",
	"nvme nvme0: I/O 512 QID 3 timeout, aborting",
	"ixgbe 0000:03:00.0 eth2: NIC Link is Down",
	"NETDEV WATCHDOG: eth0 (ixgbe): transmit queue 2 timed out",
	"unregister_netdevice: waiting for eth0 to become free. Usage count = 1",
	"EDAC MC1: 1 UE memory read error on CPU_SrcID#1_Ha#0_Chan#0_DIMM#1 (channel:0 slot:1 page:0x1234 offset:0x0 grain:32)",
	"mce: [Hardware Error]: Machine check events logged",
	"NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, GPU has fallen off the bus.",
	"SLUB: Unable to allocate memory on node -1 (gfp=0x20)",
	"nf_conntrack: nf_conntrack: table full, dropping packet",
	"EXT4-fs (xvdf): Remounting filesystem read-only",
}

// Line returns one line: a problem line with probability 1/problemEvery
// (never when problemEvery is 0), else a benign one.
func Line(r *rand.Rand, problemEvery int) string {
	if problemEvery > 0 && r.IntN(problemEvery) == 0 {
		return ProblemLines[r.IntN(len(ProblemLines))]
	}
	return BenignShapes[r.IntN(len(BenignShapes))](r)
}
