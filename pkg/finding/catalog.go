package finding

import "time"

// The condition types nodeguard writes, each with its healthy reason and
// message. Every check that raises a type takes it from here, so that two
// checks sharing a type (the cri probe and the kernel's hung runtime tasks,
// the memcg check and the kernel's slab failures) agree on its healthy
// state whatever order they are registered in.
var (
	KernelDeadlock = ConditionDefault{Type: "KernelDeadlock", Reason: "KernelHasNoDeadlock",
		Message: "kernel has no deadlock"}
	ReadonlyFilesystem = ConditionDefault{Type: "ReadonlyFilesystem", Reason: "FilesystemIsNotReadOnly",
		Message: "Filesystem is not read-only"}
	FrequentUnregisterNetDevice = ConditionDefault{Type: "FrequentUnregisterNetDevice", Reason: "NoFrequentUnregisterNetDevice",
		Message: "node is functioning properly"}
	MemoryCgroupLeak = ConditionDefault{Type: "MemoryCgroupLeak", Reason: "NoMemoryCgroupLeak",
		Message: "no leaked memory cgroups or slab growth"}
	ContainerRuntimeUnresponsive = ConditionDefault{Type: "ContainerRuntimeUnresponsive", Reason: "ContainerRuntimeIsResponsive",
		Message: "the container runtime is responsive"}
	KubeletLeaseStale = ConditionDefault{Type: "KubeletLeaseStale", Reason: "KubeletLeaseFresh",
		Message: "kubelet renews its node lease"}
	KubeletUnhealthy = ConditionDefault{Type: "KubeletUnhealthy", Reason: "KubeletHealthy",
		Message: "the kubelet's healthz answers ok"}
	DiskIOStuck = ConditionDefault{Type: "DiskIOStuck", Reason: "DiskIOIsFlowing",
		Message: "the node's disks complete I/O"}
	NICDown = ConditionDefault{Type: "NICDown", Reason: "NICIsUp",
		Message: "the node's network interfaces are up"}
	// NICFlapping is noisy: a flapping link turns it True and False
	// again within minutes, and NICDown has the evidence of a link down.
	NICFlapping = ConditionDefault{Type: "NICFlapping", Reason: "NICIsStable",
		Message: "the node's network interfaces' links are stable", Noisy: true}
	ClusterDNSUnreachable = ConditionDefault{Type: "ClusterDNSUnreachable", Reason: "ClusterDNSAnswers",
		Message: "the cluster DNS answers"}
	CheckStuck = ConditionDefault{Type: "NodeguardCheckStuck", Reason: "ChecksRunning",
		Message: "every check's probes finish within their deadlines"}
	// Degraded is the agent's own health, off unless reportDegraded is
	// set, so it is not in the Catalog of what every node gets.
	// It is noisy for the evidence: it is about the agent, whose own log
	// says more than the node's state.
	Degraded = ConditionDefault{Type: "NodeguardDegraded", Reason: "AgentHealthy",
		Message: "every check runs and the event spool has room", Noisy: true}
)

// Catalog lists the condition types above, in the order the docs list them.
func Catalog() []ConditionDefault {
	return []ConditionDefault{
		KernelDeadlock, ReadonlyFilesystem, FrequentUnregisterNetDevice, MemoryCgroupLeak,
		ContainerRuntimeUnresponsive, KubeletLeaseStale, KubeletUnhealthy, DiskIOStuck,
		NICDown, NICFlapping, ClusterDNSUnreachable, CheckStuck,
	}
}

// DefaultLeaseDuration is the kubelet's node Lease duration, for a Lease
// that does not say.
const DefaultLeaseDuration = 40 * time.Second

// LeaseStaleAfter is how old a node Lease's renewTime may be before the
// kubelet counts as not renewing: half its duration (durationSeconds, nil
// or zero for the default), twice the kubelet's renew interval, which is a
// quarter of the duration.
func LeaseStaleAfter(durationSeconds *int32) time.Duration {
	d := DefaultLeaseDuration
	if durationSeconds != nil && *durationSeconds > 0 {
		d = time.Duration(*durationSeconds) * time.Second
	}
	return d / 2
}
