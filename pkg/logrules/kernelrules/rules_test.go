package kernelrules

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// ruleCase is one line that a built-in rule must (or must not) match on its
// own. Positive lines are real kernel formats, with the kernels they come
// from noted where the format changed.
type ruleCase struct {
	rule  string
	line  string
	match bool
}

var ruleCases = []ruleCase{
	// oom-kill
	{"oom-kill", "Killed process 2100 (memhog) total-vm:8392704kB, anon-rss:7864324kB, file-rss:0kB, shmem-rss:0kB", true}, // 3.x/4.x
	{"oom-kill", "Out of memory: Killed process 2100 (memhog) total-vm:8388608kB, anon-rss:8100000kB, file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:16000kB oom_score_adj:0", true},
	{"oom-kill", "Memory cgroup out of memory: Killed process 4242 (memhog) total-vm:1201244kB, anon-rss:1045248kB, file-rss:752kB, shmem-rss:0kB, UID:65534 pgtables:2120kB oom_score_adj:968", true},
	{"oom-kill", "Killed process 1 ((sd-pam)) total-vm:1kB", true},
	{"oom-kill", "Memory cgroup out of memory: Kill process 12001 (java) score 1996 or sacrifice child", false},
	{"oom-kill", "Out of memory: Kill process 2100 (memhog) score 936 or sacrifice child", false},
	{"oom-kill", "Kill process 2200 (helper) sharing same memory", false},
	{"oom-kill", "oom_reaper: reaped process 2100 (memhog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB", false},
	{"oom-kill", "memhog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=968", false},

	// kernel-panic
	{"kernel-panic", "Kernel panic - not syncing: Fatal exception", true},
	{"kernel-panic", "Kernel panic - not syncing: Fatal exception in interrupt", true},
	{"kernel-panic", "Kernel panic - not syncing: softlockup: hung tasks", true},
	{"kernel-panic", "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b", true},
	{"kernel-panic", "Kernel panic - not syncing: System is deadlocked on memory", true},
	{"kernel-panic", "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)", true},
	{"kernel-panic", "---[ end Kernel panic - not syncing: Fatal exception ]---", false},
	{"kernel-panic", "Kernel command line: BOOT_IMAGE=/vmlinuz ro panic=10 oops=panic", false},

	// oops group
	{"oops", "Oops: 0002 [#1] PREEMPT SMP NOPTI", true},
	{"oops", "Oops: 0000 [#1] SMP", true},
	{"oops", "Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI", true},                       // 6.x
	{"oops", "Internal error: Oops: 96000005 [#1] PREEMPT SMP", true},               // arm64
	{"oops", "Internal error: Oops - BUG: 00000000f2000800 [#1] PREEMPT SMP", true}, // arm64 BUG()
	{"oops", "Oopsie: not a kernel report", false},
	{"null-deref", "BUG: kernel NULL pointer dereference, address: 0000000000000008", true},
	{"unable-to-handle", "BUG: unable to handle kernel NULL pointer dereference at 0000000000000010", true}, // 3.x/4.x
	{"unable-to-handle", "BUG: unable to handle kernel paging request at ffffffffc0a1b2c3", true},
	{"unable-to-handle", "BUG: unable to handle page fault for address: ffffc90000a3f000", true}, // 5.x+
	{"general-protection", "general protection fault: 0000 [#1] SMP", true},
	{"general-protection", "general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] SMP PTI", true},
	{"general-protection", "general protection fault, maybe for address 0x7f1e2d3c4b5a: 0000 [#1] SMP NOPTI", true},
	{"general-protection", "Oops: general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI", true},
	{"general-protection", "traps: mysqld[280069] general protection fault ip:7f81f14bc898 sp:7ffd3a9e5c10 error:0 in libc.so.6[7f81f1428000+195000]", false},
	{"general-protection", "traps: a.out[1234] general protection ip:400526 sp:7ffd1a2b3c40 error:0 in a.out[400000+1000]", false},
	{"kernel-bug", "kernel BUG at mm/slub.c:3952!", true},
	{"kernel-bug", "kernel BUG at fs/ext4/inode.c:2709!", true},
	{"invalid-opcode", "invalid opcode: 0000 [#1] SMP PTI", true},
	{"invalid-opcode", "Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", true},
	{"divide-error", "divide error: 0000 [#1] SMP", true},
	{"divide-error", "Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI", true}, // 6.x
	{"divide-error", "traps: app[4410] trap divide error ip:55d0c1a2b3c4 sp:7ffc1a2b3c40 error:0 in app[55d0c1a00000+3000]", false},
	{"invalid-opcode", "traps: java[31012] trap invalid opcode ip:7f2b1c3d4e5f sp:7f2b0a1b2c30 error:0 in libjvm.so[7f2b1b000000+1a4d000]", false},

	// hung tasks
	{"hung-task", "INFO: task dockerd:1022 blocked for more than 120 seconds.", true},
	{"hung-task", "INFO: task kworker/u16:3:12345 blocked for more than 122 seconds.", true},
	{"hung-task", "INFO: task jbd2/nvme0n1p1-8:412 blocked for more than 120 seconds.", true},
	{"hung-task", "INFO: task C2 CompilerThre:3546103 blocked for more than 1912 seconds.", true},
	{"hung-task", "INFO: task runc:[2:INIT]:293016 blocked for more than 327 seconds.", true},
	{"hung-task", `"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.`, false},
	{"hung-task", "INFO: task cat:115 is blocked on a mutex likely owned by task cat:114.", false}, // 6.14+ follow-up line
	{"runtime-hung", "INFO: task dockerd:1022 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task docker:2211 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task containerd:870 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task containerd-shim:4321 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task runc:1888 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task runc:[2:INIT]:293016 blocked for more than 327 seconds.", true},
	{"runtime-hung", "INFO: task runc:[1:CHILD]:293015 blocked for more than 327 seconds.", true},
	{"runtime-hung", "INFO: task crio:1201 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task conmon:5512 blocked for more than 120 seconds.", true},
	{"runtime-hung", "INFO: task kubelet:1402 blocked for more than 120 seconds.", true},
	{"runtime-task-hung", "INFO: task containerd:870 blocked for more than 120 seconds.", true},
	{"runtime-task-hung", "INFO: task containerd-shim:4321 blocked for more than 120 seconds.", true},
	{"runtime-task-hung", "INFO: task runc:[2:INIT]:293016 blocked for more than 327 seconds.", true},
	{"runtime-task-hung", "INFO: task crio:1201 blocked for more than 120 seconds.", true},
	{"runtime-task-hung", "INFO: task kubelet:1402 blocked for more than 120 seconds.", false},
	{"runtime-task-hung", "INFO: task java:77 blocked for more than 120 seconds.", false},
	{"runtime-hung", "INFO: task kworker/3:1:123 blocked for more than 120 seconds.", false},
	{"runtime-hung", "INFO: task mycontainerd:7 blocked for more than 120 seconds.", false},
	{"runtime-hung", "INFO: task C2 CompilerThre:3546103 blocked for more than 1912 seconds.", false},

	// lockups
	{"soft-lockup", "watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [kworker/0:1:123]", true},
	{"soft-lockup", "BUG: soft lockup - CPU#3 stuck for 22s! [java:20111]", true}, // 3.x
	{"soft-lockup", "watchdog: Disabling watchdog on nohz_full cores by default", false},
	{"soft-lockup", "Kernel command line: ro softlockup_panic=1", false},
	{"hard-lockup", "NMI watchdog: Watchdog detected hard LOCKUP on cpu 3", true},
	{"hard-lockup", "Watchdog detected hard LOCKUP on cpu 3", true},
	{"hard-lockup", "watchdog: Watchdog detected hard LOCKUP on cpu 5", true},
	{"hard-lockup", "NMI watchdog: Enabled. Permanently consumes one hw-PMU counter.", false},
	{"hard-lockup", "Kernel panic - not syncing: Hard LOCKUP", false},

	// rcu-stall
	{"rcu-stall", "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", true},
	{"rcu-stall", "rcu: INFO: rcu_sched self-detected stall on CPU", true},
	{"rcu-stall", "INFO: rcu_sched self-detected stall on CPU { 3}  (t=60000 jiffies g=1452901 c=1452900 q=8812)", true},
	{"rcu-stall", "INFO: rcu_sched detected stalls on CPUs/tasks: { 7} (detected by 2, t=60002 jiffies, g=1453022, c=1453021, q=9141)", true},
	{"rcu-stall", "INFO: rcu_bh detected stalls on CPUs/tasks:", true},
	{"rcu-stall", "INFO: rcu_tasks detected stalls on tasks:", true},
	{"rcu-stall", "INFO: rcu_sched detected expedited stalls on CPUs/tasks: { 3-... } 21004 jiffies s: 2249 root: 0x1/.", true},
	{"rcu-stall", "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P4122 } 2641 jiffies s: 2877 root: 0x0/T", true},
	{"rcu-stall", "rcu: 	RCU CPU stall warnings timeout set to 21 (rcu_cpu_stall_timeout).", false},
	{"rcu-stall", "rcu: rcu_preempt kthread starved for 10502 jiffies! g312245 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x0 ->cpu=6", false},

	// block I/O
	{"io-error", "end_request: I/O error, dev sdb, sector 1953512", true},         // 3.x
	{"io-error", "blk_update_request: I/O error, dev sda, sector 41943040", true}, // 4.x
	{"io-error", "print_req_error: I/O error, dev xvdf, sector 8388736", true},    // 4.18-5.0
	{"io-error", "blk_update_request: I/O error, dev nvme1n1, sector 209715200 op 0x1:(WRITE) flags 0x800 phys_seg 32 prio class 0", true},
	{"io-error", "I/O error, dev nvme0n1, sector 1234567 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2", true}, // 6.x
	{"io-error", "Buffer I/O error on dev dm-0, logical block 154321, lost async page write", true},
	{"io-error", "Buffer I/O error on device sdb1, logical block 244183", true}, // 3.x
	{"io-error", "blk_update_request: I/O error, dev sr0, sector 0 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0", false},
	{"io-error", "Buffer I/O error on dev sr0, logical block 0, async page read", false},
	{"io-error", "print_req_error: I/O error, dev fd0, sector 0", false},
	{"io-error", "end_request: I/O error, dev fd0, sector 0", false},
	{"io-error", "EXT4-fs warning (device dm-1): ext4_end_bio:343: I/O error 10 writing to inode 2621441 starting block 10518528)", false},
	{"io-error", "EXT4-fs (dm-0): previous I/O error to superblock detected", false},
	{"io-error", `XFS (dm-0): metadata I/O error in "xfs_trans_read_buf_map" at daddr 0x2a6b3c8 len 8 error 5`, false},
	{"block-error", "blk_update_request: critical medium error, dev sdd, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", true},
	{"block-error", "print_req_error: critical medium error, dev sdd, sector 0", true},
	{"block-error", "end_request: critical medium error, dev sdd, sector 1908896", true},
	{"block-error", "critical target error, dev sdc, sector 1024 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0", true},
	{"block-error", "blk_update_request: timeout error, dev sdb, sector 1234 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0", true},
	{"block-error", "blk_update_request: critical medium error, dev sr0, sector 64 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0", false},
	{"block-error", "operation not supported error, dev loop0, sector 0 op 0x9:(WRITE_ZEROES) flags 0x800800 phys_seg 0 prio class 0", false},
	{"block-error", "blk_update_request: I/O error, dev sda, sector 41943040", false},

	// filesystems
	{"ext4-error", "EXT4-fs error (device sda1): ext4_find_entry:1436: inode #2: comm kubelet: reading directory lblock 0", true},
	{"ext4-error", "EXT4-fs error (device dm-1) in ext4_reserve_inode_write:5880: Journal has aborted", true},
	{"ext4-error", "EXT4-fs (sda1): error count since last fsck: 3", false},
	{"ext4-error", "EXT4-fs (sdb1): mounted filesystem with ordered data mode. Opts: errors=remount-ro", false},
	{"ext4-warning", "EXT4-fs warning (device sda1): ext4_dx_add_entry:2461: Directory (ino: 1234) index full, reach max htree level :2", true},
	{"ext4-warning", "EXT4-fs (sda1): warning: mounting fs with errors, running e2fsck is recommended", false},
	{"xfs-error", `XFS (dm-0): metadata I/O error in "xfs_trans_read_buf_map" at daddr 0x2a6b3c8 len 8 error 5`, true},  // 5.x
	{"xfs-error", `XFS (dm-0): metadata I/O error: block 0x2a6b3c8 ("xfs_trans_read_buf_map") error 5 numblks 8`, true}, // 3.x/4.x
	{"xfs-error", "XFS (dm-0): log I/O error -5", true},
	{"xfs-error", "XFS (dm-0): xfs_do_force_shutdown(0x2) called from line 1272 of file fs/xfs/xfs_log.c. Return address = 00000000a1b2c3d4", true},
	{"xfs-error", "XFS (dm-0): Log I/O Error Detected. Shutting down filesystem", true},
	{"xfs-error", "XFS (dm-0): Filesystem has been shut down due to log error (0x2).", true},
	{"xfs-error", "XFS (sdb1): Corruption of in-memory data detected.  Shutting down filesystem", true},
	{"xfs-error", "XFS (sdb1): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x123/0x150 (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.", true}, // 6.x
	{"xfs-error", "XFS (sdb1): Metadata corruption detected at xfs_dinode_verify+0xa5/0x1d0 [xfs], inode 0x2a5c0 dinode", true},
	{"xfs-error", "XFS (sdb1): Internal error xfs_trans_cancel at line 1097 of file fs/xfs/xfs_trans.c.  Caller xfs_create+0x46a/0x5c0 [xfs]", true},
	{"xfs-error", "XFS (dm-0): Mounting V5 Filesystem", false},
	{"xfs-error", "XFS (dm-0): Ending clean mount", false},
	{"xfs-error", "XFS (sdc): Unmounting Filesystem", false},
	{"xfs-error", "XFS (nvme2n1): Quotacheck: Done.", false},
	{"remount-ro", "EXT4-fs (dm-1): Remounting filesystem read-only", true},
	{"remount-ro", "EXT4-fs (sda1): re-mounted. Opts: errors=remount-ro", false},
	{"remount-ro", "XFS (sdb): recovery required on read-only device.", false},

	// nvme
	{"nvme-timeout", "nvme nvme0: I/O 512 QID 3 timeout, aborting", true},
	{"nvme-timeout", "nvme nvme0: I/O 512 QID 3 timeout, reset controller", true},
	{"nvme-timeout", "nvme nvme0: I/O 0 QID 0 timeout, disable controller", true},
	{"nvme-timeout", "nvme nvme0: I/O 512 (Write) QID 3 timeout, aborting", true},
	{"nvme-timeout", "nvme nvme1: I/O tag 512 (1200) opcode 0x1 (Write) QID 3 timeout, aborting req_op:WRITE(1) size:4096", true}, // 6.x
	{"nvme-timeout", "nvme nvme1: I/O tag 28 (401c) QID 0 timeout, reset controller", true},                                       // 6.x
	{"nvme-timeout", "nvme nvme0: controller is down; will reset: CSTS=0xffffffff, PCI_STATUS=0xffff", true},
	{"nvme-timeout", "nvme nvme0: Removing after probe failure status: -19", true},
	{"nvme-timeout", "nvme nvme0: Device not ready; aborting reset, CSTS=0x1", true},
	{"nvme-timeout", "nvme nvme0: pci function 0000:00:04.0", false},
	{"nvme-timeout", "nvme nvme0: 2/0/0 default/read/poll queues", false},
	{"nvme-timeout", "nvme nvme0: Abort status: 0x0", false},
	{"nvme-timeout", " nvme0n1: p1 p14 p15", false},
	{"nvme-timeout", "Modules linked in: nvme nvme_core ena", false},

	// network
	{"nic-link-down", "ixgbe 0000:03:00.0 eth2: NIC Link is Down", true},
	{"nic-link-down", "i40e 0000:3b:00.0 ens1f0: NIC Link is Down", true},
	{"nic-link-down", "ice 0000:3b:00.0 ens785f0: NIC Link is Down", true},
	{"nic-link-down", "e1000e: eth0 NIC Link is Down", true}, // 3.x
	{"nic-link-down", "e1000e 0000:00:1f.6 eno1: NIC Link is Down", true},
	{"nic-link-down", "igb 0000:01:00.0 eno3: igb: eno3 NIC Link is Down", true},
	{"nic-link-down", "bnxt_en 0000:3b:00.1 eno2np1: NIC Link is Down", true},
	{"nic-link-down", "vmxnet3 0000:0b:00.0 ens192: NIC Link is Down", true},
	{"nic-link-down", "tg3 0000:02:00.0 eth3: Link is down", true},
	{"nic-link-down", "r8169 0000:02:00.0 enp2s0: Link is Down", true},
	{"nic-link-down", "eth0: Link is Down", true},
	{"nic-link-down", "gve 0000:00:04.0 ens4: Device link is down.", true},
	{"nic-link-down", "ixgbe 0000:03:00.0 eth2: NIC Link is Up 10 Gbps, Flow Control: RX/TX", false},
	{"nic-link-down", "IPv6: ADDRCONF(NETDEV_UP): eth0: link is not ready", false},
	{"nic-link-down", "cali5e4f3a2b1c0: Link is Down", false},
	{"nic-link-down", "veth7d6e5f4: Link is Down", false},
	{"nic-link-down", "flannel.1: Link is Down", false},
	{"nic-link-down", "cni0: Link is Down", false},
	{"nic-link-down", "docker0: Link is Down", false},
	{"nic-link-down", "lxc9a8b7c6d5e4f: Link is down", false},
	{"nic-link-down", "tunl0: Link is Down", false},
	{"nic-link-down", "vxlan.calico: Link is Down", false},
	{"nic-link-down", "cilium_vxlan: Link is Down", false},
	{"nic-link-down", "br-5f0e1d2c3b4a: Link is Down", false},
	{"nic-link-down", "kube-ipvs0: Link is Down", false},
	{"nic-link-down", "eni3a4b5c6d7e8: Link is Down", false},
	{"nic-link-down", "gke1a2b3c4d5e6: Link is Down", false},
	{"nic-link-down", "azv1a2b3c4d5e: Link is Down", false},
	{"nic-link-down", "mlx5_core 0000:5e:00.0 ens1f0np0: Link down", false}, // the terse rule's
	{"nic-link-down-terse", "mlx5_core 0000:5e:00.0 ens1f0np0: Link down", true},
	{"nic-link-down-terse", "mlx4_en: eth1: Link Down", true},
	{"nic-link-down-terse", "mlx5_core 0000:5e:00.0 ens1f0np0: Link up", false},
	{"nic-link-down-terse", "ata3: SATA link down (SStatus 0 SControl 300)", false},
	{"nic-link-down-terse", "bond0: link status down for interface eth1, disabling it in 200 ms", false},
	{"nic-link-down-terse", "ixgbe 0000:03:00.0 eth2: NIC Link is Down", false}, // the other rule's
	{"nic-link-down-terse", "vxlan.calico: link down", false},
	{"nic-link-down-terse", "veth7d6e5f4: Link down", false},
	{"nic-link-down-terse", "mlx5_core 0000:5e:00.0 ens1f0np0: Link downgraded", false},
	{"netdev-tx-timeout", "NETDEV WATCHDOG: eth0 (ixgbe): transmit queue 2 timed out", true},
	{"netdev-tx-timeout", "NETDEV WATCHDOG: ens5 (ena): transmit queue 1 timed out 5376 ms", true},
	{"netdev-tx-timeout", "ixgbe 0000:03:00.0 eth0: NETDEV WATCHDOG: CPU: 3: transmit queue 2 timed out 5120 ms", true}, // 6.x
	{"netdev-tx-timeout", "ixgbe 0000:03:00.0 eth0: initiating reset due to tx timeout", false},
	{"unregister-netdevice", "unregister_netdevice: waiting for eth0 to become free. Usage count = 1", true},
	{"unregister-netdevice", "unregister_netdevice: waiting for lo to become free. Usage count = 2", true},
	{"conntrack-full", "nf_conntrack: table full, dropping packet.", true},
	{"conntrack-full", "nf_conntrack: nf_conntrack: table full, dropping packet", true},
	{"conntrack-full", "nf_conntrack: default automatic helper assignment has been turned off for security reasons and CT-based  firewall rule not found. Use the iptables CT target to attach helpers instead.", false},
	{"conntrack-full", "nf_conntrack: expectation table full", false},

	// hardware
	{"edac", "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x1a2b3c offset:0x0 grain:32 syndrome:0x0 -  area:DRAM err_code:0001:0091 socket:0 ha:0 channel_mask:2 rank:0)", true},
	{"edac", "EDAC MC1: 1 UE memory read error on CPU_SrcID#1_Ha#0_Chan#0_DIMM#1 (channel:0 slot:1 page:0x1234 offset:0x0 grain:32)", true},
	{"edac", "EDAC MC0: 12 CE memory scrubbing error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (channel:0 slot:0 page:0x0 offset:0x0 grain:32)", true},
	{"edac", `EDAC MC0: CE page 0x7f3a, offset 0x9c0, grain 8, syndrome 0x52, row 1, channel 0, label "DIMM_A1": i5000 CE`, true},
	{"edac", "EDAC MC: Ver: 3.0.0", false},
	{"edac", "EDAC MC0: Giving out device to module skx_edac controller Skylake Socket#0 IMC#0: DEV 0000:3a:0a.0 (INTERRUPT)", false},
	{"edac", "EDAC sbridge: Seeking for: PCI ID 8086:6fa0", false},
	{"edac", "EDAC skx: ECC is disabled on imc 0", false},
	{"edac", "EDAC amd64: Node 0: DRAM ECC enabled.", false},
	{"mce", "mce: [Hardware Error]: Machine check events logged", true},
	{"mce", "mce: [Hardware Error]: CPU 3: Machine Check: 0 Bank 7: cc00008000010090", true},
	{"mce", "mce: CPU supports 22 MCE banks", false},
	{"gpu-xid", "NVRM: Xid (PCI:0000:3b:00): 79, pid=2345, name=python3, GPU has fallen off the bus.", true},
	{"gpu-xid", "NVRM: Xid (PCI:0000:86:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0): Out Of Range Address", true},
	{"gpu-xid", "NVRM: Xid (0000:3b:00): 48, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.", true},
	{"gpu-xid", "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", false},
	{"gpu-xid", "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.161.08  Tue Mar  5 22:42:15 UTC 2024", false},
	{"slab-alloc-failure", "SLUB: Unable to allocate memory on node -1 (gfp=0x20)", true},
	{"slab-alloc-failure", "SLUB: Unable to allocate memory on node -1, gfp=0x8020(GFP_ATOMIC)", true},
	{"slab-alloc-failure", "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=8, Nodes=1", false},
	{"slab-alloc-failure-leak", "SLUB: Unable to allocate memory on node -1 (gfp=0x20)", true},
	{"slab-alloc-failure-leak", "SLUB: HWalign=64, Order=0-3, MinObjects=0, CPUs=8, Nodes=1", false},
}

// TestRules runs each built-in rule on its own over its cases, so a case
// shows which rule it is about; every built-in rule must have a case it
// matches.
func TestRules(t *testing.T) {
	byName := map[string]logrules.Rule{}
	runtimeRules, runtimeConds := RuntimeRules()
	for _, r := range append(Rules(), runtimeRules...) {
		byName[r.Name] = r
	}
	covered := map[string]bool{
		// Needs several lines; TestFrequentUnregisterNetDevice covers it.
		"frequent-unregister-netdevice": true,
	}
	for _, tc := range ruleCases {
		r, ok := byName[tc.rule]
		if !ok {
			t.Errorf("case names rule %q, which is no built-in rule", tc.rule)
			continue
		}
		if tc.match {
			covered[tc.rule] = true
		}
		e, err := logrules.NewEngine([]logrules.Rule{r}, append(Conditions(), runtimeConds...))
		if err != nil {
			t.Fatal(err)
		}
		got := feedOne(e, tc.line, time.Unix(100, 0))
		if matched := len(got) > 0; matched != tc.match {
			t.Errorf("rule %s on %q: matched %v, want %v", tc.rule, tc.line, matched, tc.match)
		}
		if tc.match && !strings.Contains(tc.line, r.Contains) {
			t.Errorf("rule %s matched %q, which lacks its literal %q", tc.rule, tc.line, r.Contains)
		}
		for _, f := range got {
			if err := f.Validate(); err != nil {
				t.Errorf("rule %s: invalid finding: %v", tc.rule, err)
			}
			if f.Reason != r.Reason {
				t.Errorf("rule %s: finding reason %s, want %s", tc.rule, f.Reason, r.Reason)
			}
		}
	}
	for name := range byName {
		if !covered[name] {
			t.Errorf("built-in rule %s has no line it must match", name)
		}
	}
}

// reasonsOf names findings the way the tables do, sorted: an event by its
// reason, a condition as TYPE=STATUS.
func conditionsOf(fs []finding.Finding) []finding.Finding {
	var out []finding.Finding
	for _, f := range fs {
		if f.Kind == finding.KindCondition {
			out = append(out, f)
		}
	}
	return out
}

// feedOne feeds one line and ends the report it may begin: what the line
// makes, whenever it goes out.
func feedOne(e *logrules.Engine, line string, at time.Time) []finding.Finding {
	return e.Flush(e.Feed(logrules.Line{Text: line, Time: at}, nil))
}

func reasonsOf(fs []finding.Finding) []string {
	var out []string
	for _, f := range fs {
		if f.Kind == finding.KindCondition {
			out = append(out, f.Type+"="+string(f.Status))
		} else {
			out = append(out, f.Reason)
		}
	}
	sort.Strings(out)
	return out
}

// TestEngineLines runs the whole built-in rule set over single lines: what
// several rules say about one line, and look-alikes that must say nothing.
func TestEngineLines(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"INFO: task dockerd:1022 blocked for more than 120 seconds.", []string{"KernelDeadlock=True", "TaskHung"}},
		{"INFO: task kworker/3:1:123 blocked for more than 120 seconds.", []string{"TaskHung"}},
		{"Kernel panic - not syncing: Watchdog detected hard LOCKUP on cpu 3", []string{"KernelPanic", "SoftLockup"}},
		{"Oops: general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN NOPTI", []string{"KernelOops"}},
		{"Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", []string{"KernelOops"}},
		{"EXT4-fs warning (device dm-1): ext4_end_bio:343: I/O error 10 writing to inode 2621441 starting block 10518528)", []string{"Ext4Warning"}},
		{`XFS (dm-0): metadata I/O error in "xfs_trans_read_buf_map" at daddr 0x2a6b3c8 len 8 error 5`, []string{"XFSError"}},
		{"I/O error, dev nvme0n1, sector 1234567 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2", []string{"IOError"}},
		{"blk_update_request: critical medium error, dev sdd, sector 0", []string{"IOError"}},
		{"mlx4_en: eth1: Link Down", []string{"NICLinkDown"}},
		{"ixgbe 0000:03:00.0 eth2: NIC Link is Down", []string{"NICLinkDown"}},
		{"unregister_netdevice: waiting for eth0 to become free. Usage count = 1", []string{"UnregisterNetDevice"}},
		{"EXT4-fs (dm-1): Remounting filesystem read-only", []string{"ReadonlyFilesystem=True"}},
		// Nothing.
		{"Kernel command line: BOOT_IMAGE=/vmlinuz ro panic=10 softlockup_panic=1 hung_task_panic=0", nil},
		{"EXT4-fs (sda1): mounted filesystem with ordered data mode. Opts: errors=remount-ro", nil},
		{"e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx", nil},
		{"cni0: port 1(veth0a1b2c3d) entered disabled state", nil},
		{"docker0: port 1(veth9f8e7d6) entered disabled state", nil},
		{"device veth0a1b2c3d left promiscuous mode", nil},
		{"oom_reaper: reaped process 2100 (memhog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB", nil},
		{"Memory cgroup out of memory: Kill process 12001 (java) score 1996 or sacrifice child", nil},
		{`"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.`, nil},
		{"traps: mysqld[280069] general protection fault ip:7f81f14bc898 sp:7ffd3a9e5c10 error:0 in libc.so.6[7f81f1428000+195000]", nil},
		{"Buffer I/O error on dev sr0, logical block 0, async page read", nil},
		{"ata3: SATA link down (SStatus 0 SControl 300)", nil},
		{"---[ end trace 0000000000000000 ]---", nil},
		{"---[ end Kernel panic - not syncing: Fatal exception ]---", nil},
		{"", nil},
		{"   ", nil},
	}
	for _, tt := range tests {
		got := reasonsOf(feedOne(defaultEngine(t), tt.line, time.Unix(100, 0)))
		if !slices.Equal(got, tt.want) {
			t.Errorf("%q: found %v, want %v", tt.line, got, tt.want)
		}
	}
}

// benignLines are lines of the shapes a healthy node logs all day, several of
// which hold a rule's literal and so run its pattern.
var benignLines = []string{
	"cni0: port 1(veth0a1b2c3d) entered blocking state",
	"cni0: port 1(veth0a1b2c3d) entered disabled state",
	"device veth0a1b2c3d entered promiscuous mode",
	"IPv6: ADDRCONF(NETDEV_UP): eth0: link is not ready",
	"IPv6: ADDRCONF(NETDEV_CHANGE): veth0a1b2c3d: link becomes ready",
	"eth0: renamed from tmp4f1a2",
	"cali5e4f3a2b1c0: Link is Down",
	"ixgbe 0000:03:00.0 eth2: NIC Link is Up 10 Gbps, Flow Control: RX/TX",
	"mlx5_core 0000:5e:00.0 ens1f0np0: Link up",
	"ata3: SATA link down (SStatus 0 SControl 300)",
	"nvme nvme0: 2/0/0 default/read/poll queues",
	"XFS (nvme2n1): Mounting V5 Filesystem",
	"XFS (nvme2n1): Ending clean mount",
	"EXT4-fs (sda1): mounted filesystem with ordered data mode. Opts: errors=remount-ro",
	"EDAC MC: Ver: 3.0.0",
	"NVRM: loading NVIDIA UNIX x86_64 Kernel Module  535.161.08  Tue Mar  5 22:42:15 UTC 2024",
	"audit: type=1400 audit(1700000000.123:2): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"cri-containerd.apparmor.d\" pid=912 comm=\"apparmor_parser\"",
	"oom_reaper: reaped process 2100 (memhog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
	"traps: mysqld[280069] general protection fault ip:7f81f14bc898 sp:7ffd3a9e5c10 error:0 in libc.so.6[7f81f1428000+195000]",
	"Buffer I/O error on dev sr0, logical block 0, async page read",
	`"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.`,
	"rcu: 	RCU CPU stall warnings timeout set to 21 (rcu_cpu_stall_timeout).",
	"---[ end trace 0000000000000000 ]---",
	"",
}

// TestFeedBenignAllocatesNothing holds Feed to its promise: a line that makes
// no finding allocates nothing, even when it passes a rule's literal filter.
func TestFeedBenignAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	e := defaultEngine(t)
	buf := make([]finding.Finding, 0, 4)
	t0 := time.Unix(1, 0)
	for _, l := range benignLines {
		if got := e.Feed(logrules.Line{Text: l, Time: t0}, buf[:0]); len(got) != 0 {
			t.Fatalf("benign line %q made findings %v", l, reasonsOf(got))
		}
		allocs := testing.AllocsPerRun(200, func() { buf = e.Feed(logrules.Line{Text: l, Time: t0}, buf[:0]) })
		if allocs != 0 {
			t.Errorf("Feed(%q) allocates %v times per line", l, allocs)
		}
	}
}

// TestMergeUserRules: the built-in rules merge with a user's replacement and
// still compile, and every built-in rule has a unique name (a duplicate could
// be neither replaced nor disabled as a user expects).
func TestMergeUserRules(t *testing.T) {
	defs := Rules()
	seen := map[string]bool{}
	for _, r := range defs {
		if seen[r.Name] {
			t.Errorf("two built-in rules are named %q", r.Name)
		}
		seen[r.Name] = true
	}
	user := event("oom-kill", "OOMKilling", "Killed process", `Killed process \d+`)
	merged, err := logrules.Merge(defs, []logrules.Rule{user}, []string{"conntrack-full"})
	if err != nil {
		t.Fatal(err)
	}
	if len(merged) != len(defs)-1 {
		t.Errorf("%d rules after merge, want %d", len(merged), len(defs)-1)
	}
	if _, err := logrules.NewEngine(merged, Conditions()); err != nil {
		t.Errorf("merged rules do not compile: %v", err)
	}
}

// TestRulesShape holds the built-in rules to what the design relies on: the
// reasons are the ones the guide names, the conditions they set are declared
// with a healthy state that is a valid finding, and they read the kernel log.
func TestRulesShape(t *testing.T) {
	reasons := map[string]bool{
		"OOMKilling": true, "KernelOops": true, "KernelPanic": true, "TaskHung": true, "SoftLockup": true,
		"RCUStall": true, "IOError": true, "Ext4Error": true, "Ext4Warning": true, "XFSError": true,
		"NVMeTimeout": true, "NICLinkDown": true, "NetdevTxTimeout": true, "UnregisterNetDevice": true,
		"MemoryHardwareError": true, "GPUXid": true, "SlabAllocationFailure": true, "ConntrackFull": true,
		// Condition reasons.
		"ContainerRuntimeHung": true, "FilesystemIsReadOnly": true,
	}
	conds := map[string]bool{}
	for _, c := range Conditions() {
		conds[c.Type] = true
		if c.Reason == "" || c.Message == "" {
			t.Errorf("condition %s has no healthy reason or message", c.Type)
		}
		if h := c.Healthy(); h.Status != finding.StatusFalse || h.Validate() != nil {
			t.Errorf("healthy %s is %+v", c.Type, h)
		}
	}
	for _, r := range Rules() {
		if !reasons[r.Reason] {
			t.Errorf("rule %s has reason %q, which the guide does not name", r.Name, r.Reason)
		}
		if r.Kind == finding.KindCondition && !conds[r.Condition] {
			t.Errorf("rule %s sets undeclared condition %s", r.Name, r.Condition)
		}
		if r.Source != "kmsg" {
			t.Errorf("rule %s reads %q, want kmsg", r.Name, r.Source)
		}
		if r.Contains == "" {
			t.Errorf("rule %s has no literal of its own", r.Name)
		}
	}
}

func TestNPDKernelMonitorRules(t *testing.T) {
	rules, conds, err := logrules.LoadNPD("testdata/npd/kernel-monitor.json")
	if err != nil {
		t.Fatal(err)
	}
	rules, conds = logrules.AddNPD(Rules(), Conditions(), rules, conds)
	e, err := logrules.NewEngine(rules, conds)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string
		want []string // reason or condition=reason, in order
	}{
		// The built-in rule and NPD's describe the same kill: one finding.
		{"Out of memory: Killed process 77 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB", []string{"OOMKilling"}},
		// NPD's multi-line OOM rule is matched by its last line, once.
		{"Killed process 78 (y) total-vm:1kB, anon-rss:1kB, file-rss:0kB", []string{"OOMKilling"}},
		// One condition per line: the built-in reason wins over DockerHung.
		{"INFO: task docker:123 blocked for more than 120 seconds.", []string{"TaskHung", "KernelDeadlock=ContainerRuntimeHung"}},
		// NPD's own reasons and conditions are kept.
		{"EDAC MC0: 1 CE memory read error on DIMM", []string{"MemoryHardwareError", "MemoryReadError"}},
		{"dockerd: returned error: readlink /var/lib/docker/overlay2/l/X: invalid argument", []string{"CorruptDockerOverlay2=CorruptDockerOverlay2"}},
		{"divide error: 0000 [#1] SMP", []string{"KernelOops"}},
		{"EXT4-fs (sda1): mounted filesystem with ordered data mode", nil},
	}
	at := time.Unix(0, 0)
	for _, tt := range tests {
		at = at.Add(time.Minute) // keep reports apart
		var got []string
		for _, f := range feedOne(e, tt.line, at) {
			if f.Kind == finding.KindCondition {
				got = append(got, f.Type+"="+f.Reason)
			} else {
				got = append(got, f.Reason)
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%q: got %v, want %v", tt.line, got, tt.want)
		}
	}
	var types []string
	for _, c := range e.Conditions() {
		types = append(types, c.Type)
	}
	if strings.Join(types, ",") != "KernelDeadlock,ReadonlyFilesystem,FrequentUnregisterNetDevice,MemoryCgroupLeak,CorruptDockerOverlay2" {
		t.Errorf("conditions %v: want the built-in ones once and NPD's new one", types)
	}
}

// TestFrequentUnregisterNetDevice: the built-in rule needs three leaks
// within ten minutes, which no single-line case can show, and clears after
// thirty quiet minutes.
func TestFrequentUnregisterNetDevice(t *testing.T) {
	const line = "unregister_netdevice: waiting for eth0 to become free. Usage count = 1"
	t0 := time.Unix(50_000, 0)
	tests := []struct {
		name    string
		offsets []time.Duration
		fires   bool // on the last line
	}{
		{"three in a burst", []time.Duration{0, time.Second, 2 * time.Second}, true},
		{"three within ten minutes", []time.Duration{0, 5 * time.Minute, 10*time.Minute - time.Second}, true},
		{"three over ten minutes", []time.Duration{0, 5 * time.Minute, 10 * time.Minute}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := defaultEngine(t)
			var fired []time.Duration
			for _, d := range tt.offsets {
				for _, f := range e.Feed(logrules.Line{Text: line, Time: t0.Add(d)}, nil) {
					if f.Type == finding.FrequentUnregisterNetDevice.Type && f.Status == finding.StatusTrue {
						fired = append(fired, d)
					}
				}
			}
			last := tt.offsets[len(tt.offsets)-1]
			var want []time.Duration
			if tt.fires {
				want = []time.Duration{last}
			}
			if !slices.Equal(fired, want) {
				t.Fatalf("True at %v, want at %v", fired, want)
			}
			if !tt.fires {
				return
			}
			end := t0.Add(last)
			// The events' storm ends at Expire too; only the condition is
			// judged here.
			if got := conditionsOf(e.Expire(end.Add(30*time.Minute-time.Second), nil)); len(got) != 0 {
				t.Fatalf("expired early: %+v", got)
			}
			got := conditionsOf(e.Expire(end.Add(30*time.Minute), nil))
			if len(got) != 1 || got[0].Type != "FrequentUnregisterNetDevice" || got[0].Status != finding.StatusFalse || got[0].Reason != "NoFrequentUnregisterNetDevice" {
				t.Errorf("Expire = %+v", got)
			}
		})
	}
}
