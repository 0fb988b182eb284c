// Package kernelrules holds the kernel log's built-in rules, the ones the
// kmsg check starts from before a user's rules are merged in. They live
// apart from pkg/logrules so that the engine knows no rule of its own and
// any rule set, the kernel's, journald's or a user's, is data to it.
package kernelrules

import (
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
)

// podPlumbing matches the virtual interfaces that container networking creates
// and destroys all day; their link changes are not node problems.
const podPlumbing = `\b(?:veth|cali|cni|flannel|docker|lxc|tunl|vxlan|cilium|gke|eni|azv|kube-|br-)[\w.@-]*:`

// runtimeTasks are the processes whose hung tasks make the node unable to run
// pods (NPD's DockerHung, generalised to today's runtimes and the kubelet).
// runc's own processes are named runc:[0:PARENT], runc:[1:CHILD] and
// runc:[2:INIT] while they set a container up.
const runtimeTasks = `(?:` + containerRuntimeTasks + `|kubelet)`

// containerRuntimeTasks are the container runtime's own processes.
const containerRuntimeTasks = `(?:dockerd|docker|containerd|containerd-shim[\w-]*|runc(?::\[\d:\w+\])?|crio|conmon)`

// notBlockDevices are devices whose I/O errors are not a node problem: an
// empty virtual CD drive (sr0) or floppy (fd0) on a VM fails every probe.
// Every form the rules match puts a space before "dev": beginning with it,
// and not with \b, gives Go's regexp a literal to find the match from
// instead of trying every offset of the line (0.35 against 1.4 us).
const notBlockDevices = ` (?:dev|device) (?:sr|fd)\d+\b`

// What a report's later lines tell, as details of its first line's rule.
// A frame is "name+0xOFF/0xLEN", maybe with a module, after an old kernel's
// "[<address>]"; "?" marks one the unwinder only guessed.
// frame captures the function and the module (with its space before it).
const frame = `([\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+( \[[\w-]+\])?`

// where captures a frame whole, offsets and module, as RIP names it.
const where = `([\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[[\w-]+\])?)`

var (
	// "CPU: 6 PID: 31337 Comm: kworker/6:2 Tainted: ..."; 6.x kernels put
	// "UID: N" before PID. A task name may hold spaces.
	taskDetail = logrules.Detail{Label: "task", Contains: "Comm: ",
		Pattern: `CPU: \d+ (?:UID: \d+ )?PID: (\d+) Comm: (.+?)(?: +(?:Not tainted|Tainted:).*)?$`, Format: "$2 pid $1"}
	// Where the CPU was: x86's RIP (IP on old 32/64-bit kernels).
	ripDetail = logrules.Detail{Label: "RIP", Contains: "IP: ",
		Pattern: `\bR?IP: (?:\d{4}:)?(?:\[<[0-9a-f]+>\] +)*` + where}
	// arm64's program counter.
	pcDetail = logrules.Detail{Label: "pc", Contains: "pc : ", Pattern: `^pc : ` + where}
	// The taint flags, "G           OE" before the version, or 6.x's
	// "[W]=WARN, [O]=OOT_MODULE" on a line of their own. RHEL puts dashes
	// between the flags and the version.
	taintDetail = logrules.Detail{Label: "tainted", Contains: "Tainted: ",
		Pattern: `Tainted: (?:([A-Z](?: +[A-Z]+)*) +(?:-+ +)?\d|(\[[A-Z]\]=\w+(?:, \[[A-Z]\]=\w+)*))`, Format: "$1$2"}
	// A hung task's first frames that are not the scheduler putting it to
	// sleep: where it waits (io_schedule, jbd2_journal_commit_transaction).
	stackDetail = logrules.Detail{Label: "stack", Contains: "+0x",
		Pattern: `^\s*(?:\[<[0-9a-f]+>\] )?` + frame, Format: "$1$2",
		Exclude: `^\s*(?:\[<[0-9a-f]+>\] )?(?:\? |(?:__)?schedule\+|schedule_\w+\+|__switch_to|context_switch|preempt_schedule|ret_from_fork|kthread\+)`,
		Max:     4}
	// An RCU stall's stalled CPUs ("3-....: (5249 ticks this GP)"; "3:" on
	// old kernels), the tasks blocking the grace period, and its age.
	rcuCPUsDetail  = logrules.Detail{Label: "stalled CPUs", Contains: ": (", Pattern: `^(?:rcu:)?\s+(\d+)(?:-\S*)?: \(`, Max: 16}
	rcuTasksDetail = logrules.Detail{Label: "blocking tasks", Contains: "Tasks blocked on",
		Pattern: `Tasks blocked on level-\d+ rcu_node \([^)]*\):((?: P\d+\S*)+)`}
	rcuAgeDetail = logrules.Detail{Label: "grace period", Contains: " jiffies", Pattern: `\bt=(\d+) jiffies`, Format: "$1 jiffies old"}
)

func event(name, reason, contains, pattern string) logrules.Rule {
	return logrules.Rule{Name: name, Source: "kmsg", Kind: finding.KindEvent, Reason: reason, Contains: contains, Pattern: pattern}
}

func minutes(n int) finding.Duration {
	return finding.Duration{Duration: time.Duration(n) * time.Minute}
}

// Conditions are the condition types the built-in kernel rules own.
func Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{
		finding.KernelDeadlock,
		finding.ReadonlyFilesystem,
		finding.FrequentUnregisterNetDevice,
		// Shared with the memcg check, which reads the same leak from the
		// cgroup tree; the reporter merges the two.
		finding.MemoryCgroupLeak,
	}
}

// RuntimeRules are the kmsg check's rules beyond the kernel's own
// vocabulary: they raise a condition another check owns too. The kernel may
// see the container runtime stuck in D state before a CRI call times out,
// and it repeats a hung task's report every hung_task_timeout_secs (120 s)
// while it lasts, so ten quiet minutes mean it is over. A hung kubelet is no
// hung runtime.
func RuntimeRules() ([]logrules.Rule, []finding.ConditionDefault) {
	return []logrules.Rule{{
		Name: "runtime-task-hung", Source: "kmsg", Kind: finding.KindCondition, Condition: finding.ContainerRuntimeUnresponsive.Type,
		Reason: "RuntimeTaskHung", Contains: "blocked for more than",
		Pattern:    `INFO: task ` + containerRuntimeTasks + `:\d+ blocked for more than \d+ seconds`,
		ClearAfter: minutes(10),
	}}, []finding.ConditionDefault{finding.ContainerRuntimeUnresponsive}
}

// Rules are the built-in kernel log rules. Each names the literal its lines
// must contain so that benign lines cost a few substring searches.
func Rules() []logrules.Rule {
	oops := func(name, contains, pattern string) logrules.Rule {
		r := event(name, "KernelOops", contains, pattern)
		r.Group = "oops"
		r.Details = []logrules.Detail{taskDetail, ripDetail, pcDetail, taintDetail}
		return r
	}
	lockup := func(name, contains, pattern string) logrules.Rule {
		r := event(name, "SoftLockup", contains, pattern)
		r.Group = "lockup"
		r.Details = []logrules.Detail{taskDetail, ripDetail, pcDetail}
		return r
	}
	hungTask := event("hung-task", "TaskHung", "blocked for more than", `INFO: task .+:\d+ blocked for more than \d+ seconds`)
	hungTask.Details = []logrules.Detail{stackDetail}
	rcuStall := event("rcu-stall", "RCUStall", " stall", `rcu\w*:? (?:INFO: )?(?:\w+ )?(?:self-)?detected (?:expedited )?stalls? on`)
	rcuStall.Details = []logrules.Detail{rcuCPUsDetail, rcuTasksDetail, rcuAgeDetail}
	oom := event("oom-kill", "OOMKilling", "Killed process", `Killed process \d+ \(`)
	oom.Attribute = "oom"
	frequentUnregister := logrules.Rule{
		Name: "frequent-unregister-netdevice", Source: "kmsg", Kind: finding.KindCondition,
		Condition: finding.FrequentUnregisterNetDevice.Type, Reason: "UnregisterNetDevice",
		Contains: "unregister_netdevice: waiting for", Pattern: `unregister_netdevice: waiting for \S+ to become free`,
		MinCount: 3, Window: minutes(10), ClearAfter: minutes(30),
	}
	return []logrules.Rule{
		oom,
		{
			Name: "kernel-panic", Source: "kmsg", Kind: finding.KindEvent, Reason: "KernelPanic",
			Contains: "Kernel panic", Pattern: `Kernel panic - not syncing`,
			// The panic's closing marker repeats its message.
			Exclude: `---\[ end Kernel panic`,
			// The reason follows "not syncing:" on the line itself; the
			// task is the one that panicked (khungtaskd for a hung task).
			Details: []logrules.Detail{taskDetail},
		},
		oops("oops", "Oops", `\bOops(?::| -) `),
		oops("null-deref", "BUG: kernel NULL pointer", `BUG: kernel NULL pointer dereference`),
		oops("unable-to-handle", "BUG: unable to handle", `BUG: unable to handle (?:kernel|page fault)`),
		// "general protection fault: 0000 [#1]" and, since 5.5, "general
		// protection fault, probably for non-canonical address ...": not a
		// user process's "traps: NAME[PID] general protection fault ip:...".
		oops("general-protection", "general protection fault", `general protection fault[:,] `),
		oops("kernel-bug", "kernel BUG at", `kernel BUG at \S+`),
		oops("invalid-opcode", "invalid opcode", `invalid opcode: \d+`),
		oops("divide-error", "divide error", `divide error: \d+ \[#\d+\]`),
		// A task name may hold spaces: a Java thread "C2 CompilerThre".
		hungTask,
		{
			Name: "runtime-hung", Source: "kmsg", Kind: finding.KindCondition, Condition: finding.KernelDeadlock.Type,
			Reason: "ContainerRuntimeHung", Contains: "blocked for more than",
			Pattern: `INFO: task ` + runtimeTasks + `:\d+ blocked for more than \d+ seconds`,
		},
		lockup("soft-lockup", "soft lockup", `BUG: soft lockup - CPU#\d+ stuck for`),
		lockup("hard-lockup", "hard LOCKUP", `[Ww]atchdog detected hard LOCKUP on cpu`),
		rcuStall,
		{
			Name: "io-error", Source: "kmsg", Kind: finding.KindEvent, Reason: "IOError", Contains: "I/O error",
			Pattern: `(?:\bI/O error, dev \S+|Buffer I/O error on (?:dev|device) \S+|end_request: I/O error)`,
			Exclude: notBlockDevices,
		},
		{
			// The block layer names a failed request's status: "I/O error"
			// above, or one of these, e.g. a disk's unreadable sector.
			Name: "block-error", Source: "kmsg", Kind: finding.KindEvent, Reason: "IOError", Contains: "error, dev ",
			Pattern: `(?:critical (?:medium|target|nexus|space allocation|protection)|recoverable transport|timeout) error, dev \S+`,
			Exclude: notBlockDevices,
		},
		event("ext4-error", "Ext4Error", "EXT4-fs error", `EXT4-fs error`),
		event("ext4-warning", "Ext4Warning", "EXT4-fs warning", `EXT4-fs warning`),
		event("xfs-error", "XFSError", "XFS (", `XFS \([^)]+\): (?:metadata I/O error|log I/O error|Corruption|Metadata corruption|Internal error|.*[Ss]hut(?:ting)? ?down)`),
		event("nvme-timeout", "NVMeTimeout", "nvme", `nvme\S* ?\S*: (?:I/O (?:tag )?\d+ (?:\([^)]*\) )?(?:opcode \S+ \([^)]*\) )?QID \d+ timeout|controller is down|[Rr]emoving after probe failure|Device not ready; aborting)`),
		{
			Name: "nic-link-down", Source: "kmsg", Kind: finding.KindEvent, Reason: "NICLinkDown",
			Contains: "ink is", Pattern: `[\w.@-]+:? (?:NIC )?[Ll]ink is [Dd]own`, Exclude: podPlumbing,
		},
		{
			// mlx5 ("Link down"), mlx4 ("Link Down"); not libata's "ata3: SATA
			// link down" for an empty port.
			Name: "nic-link-down-terse", Source: "kmsg", Kind: finding.KindEvent, Reason: "NICLinkDown",
			Contains: "ink ", Pattern: `: [Ll]ink [Dd]own\b`, Exclude: podPlumbing,
		},
		// Recent 6.x kernels log it through the device: "DRIVER BUS DEV:
		// NETDEV WATCHDOG: CPU: N: transmit queue Q timed out T ms".
		event("netdev-tx-timeout", "NetdevTxTimeout", "NETDEV WATCHDOG", `NETDEV WATCHDOG: (?:\S+ \([^)]*\)|CPU: \d+): transmit queue \d+ timed out`),
		event("unregister-netdevice", "UnregisterNetDevice", "unregister_netdevice: waiting for", `unregister_netdevice: waiting for \S+ to become free`),
		frequentUnregister,
		event("edac", "MemoryHardwareError", "EDAC", `EDAC (?:MC\d+|\w+): (?:\d+ )?(?:CE|UE)\b`),
		event("mce", "MemoryHardwareError", "Hardware Error", `mce: \[Hardware Error\]`),
		event("gpu-xid", "GPUXid", "NVRM: Xid", `NVRM: Xid \([^)]*\): \d+`),
		event("slab-alloc-failure", "SlabAllocationFailure", "SLUB: Unable to allocate memory", `SLUB: Unable to allocate memory`),
		{
			// The kmem leak of old kernels: slab allocations fail while memory
			// is free. Clears after an hour without another.
			Name: "slab-alloc-failure-leak", Source: "kmsg", Kind: finding.KindCondition, Condition: finding.MemoryCgroupLeak.Type,
			Reason: "SlabAllocationFailure", Contains: "SLUB: Unable to allocate memory", Pattern: `SLUB: Unable to allocate memory`,
			ClearAfter: minutes(60),
		},
		event("conntrack-full", "ConntrackFull", "table full, dropping packet", `nf_conntrack: (?:nf_conntrack: )?table full, dropping packet`),
		{
			Name: "remount-ro", Source: "kmsg", Kind: finding.KindCondition, Condition: finding.ReadonlyFilesystem.Type,
			Reason: "FilesystemIsReadOnly", Contains: "read-only", Pattern: `Remounting filesystem read-only`,
		},
	}
}
