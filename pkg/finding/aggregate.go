package finding

// Aggregate is a condition type of the EKS node monitoring agent's
// vocabulary (KernelReady, ContainerRuntimeReady, ...), published with
// reporter.aggregateConditions for consumers that act on it: Karpenter's
// node repair on AWS has its repair policies for these types built in.
// Its polarity is the opposite of nodeguard's own types: True while all is
// well, False while one of its Sources is True.
type Aggregate struct {
	Type string
	// Reason is its reason while every source is False; the message then
	// names the sources checked.
	Reason string
	// Sources are nodeguard's condition types that make it False, in the
	// order its reason prefers them.
	Sources []ConditionDefault
}

// Aggregates is the one mapping from nodeguard's condition types to the
// aggregate ones; docs/consumers.md explains each choice and
// pkg/reporter derives the aggregates' state from it. A type in no
// aggregate's sources (MemoryCgroupLeak, KubeletLeaseStale,
// NodeguardCheckStuck, NodeguardDegraded) is left out on purpose.
// AcceleratedHardwareReady is not here: nodeguard has no check of GPUs or
// other accelerators (GPUXid is an event), so it publishes nothing for it
// rather than a True it has not looked for.
func Aggregates() []Aggregate {
	return []Aggregate{
		{Type: "KernelReady", Reason: "KernelIsReady",
			Sources: []ConditionDefault{KernelDeadlock, FrequentUnregisterNetDevice}},
		{Type: "ContainerRuntimeReady", Reason: "ContainerRuntimeIsReady",
			Sources: []ConditionDefault{ContainerRuntimeUnresponsive, KubeletUnhealthy}},
		{Type: "NetworkingReady", Reason: "NetworkingIsReady",
			Sources: []ConditionDefault{NICDown, NICFlapping, ClusterDNSUnreachable}},
		{Type: "StorageReady", Reason: "StorageIsReady",
			Sources: []ConditionDefault{ReadonlyFilesystem, DiskIOStuck}},
	}
}

// IsAggregate says whether condType is one of the aggregate types, which
// are True when healthy.
func IsAggregate(condType string) bool {
	for _, a := range Aggregates() {
		if a.Type == condType {
			return true
		}
	}
	return false
}
