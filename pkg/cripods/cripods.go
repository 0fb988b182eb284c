// Package cripods names the pods and containers of this node as the
// container runtime knows them, over CRI. A memory cgroup gives an OOM
// kill's pod UID and container ID; the runtime holds every pod of the node,
// and says which namespace, name and container those are, with no watch of
// pods on the API server.
package cripods

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Runtime is the part of CRI that naming needs; CRI's generated
// RuntimeServiceClient is one. The connection behind it is its owner's
// (the agent shares one with the cri check), not Names'.
type Runtime interface {
	ListPodSandbox(ctx context.Context, in *runtimeapi.ListPodSandboxRequest, opts ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error)
	ListContainers(ctx context.Context, in *runtimeapi.ListContainersRequest, opts ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error)
}

// ErrUnknown says the runtime, listed after the question was asked, does
// not know the pod.
var ErrUnknown = errors.New("the container runtime knows no such pod")

var errClosed = errors.New("pod names: closed")

// Options tune the lookup; New fills what is left zero.
type Options struct {
	// Timeout bounds each listing (2 s by default).
	Timeout time.Duration
	// Interval is the least time between two listings (1 s by default), so
	// that a storm of OOM kills in pods not yet seen costs the runtime one
	// ListPodSandbox and one ListContainers a second at most.
	Interval time.Duration
}

// Names looks pods up by UID and containers by ID. It asks the runtime only
// when asked about one it does not know, and then lists every pod sandbox
// and every container, exited ones included: an OOM kill's container has
// often just died. Safe for concurrent use.
type Names struct {
	opts   Options
	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	runtime Runtime

	mu    sync.Mutex
	pods  map[string]pod       // by pod UID
	conts map[string]container // by container ID
	// begun counts the listings begun; known is the number of the last
	// one that succeeded, whose view pods and conts are.
	begun, known int
	lastStart    time.Time
	pending      *listing // the listing waited for or under way, nil when none
}

type pod struct{ namespace, name string }

type container struct{ name, podUID string }

type listing struct {
	done chan struct{}
	err  error // set before done is closed
}

// New returns names from rt, which it asks at the first question, not
// now.
func New(rt Runtime, opts Options) *Names {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Names{opts: opts, ctx: ctx, cancel: cancel, runtime: rt}
}

// PodName returns the namespace and name of the pod with podUID and, when
// containerID is set and the runtime knows it as that pod's, the
// container's name. It waits, until ctx ends, for a listing begun after
// the question when the pod or container is not known yet.
func (n *Names) PodName(ctx context.Context, podUID, containerID string) (namespace, name, containerName string, err error) {
	n.mu.Lock()
	// A listing begun before now may have missed a pod that came since.
	need := n.begun + 1
	for {
		p, podOK := n.pods[podUID]
		c, contOK := n.conts[containerID]
		contOK = contOK && c.podUID == podUID
		if podOK && (containerID == "" || contOK) {
			n.mu.Unlock()
			return p.namespace, p.name, c.name, nil
		}
		if n.known >= need {
			n.mu.Unlock()
			if podOK {
				// The pod, but not the container: it has been removed, or
				// the ID is the sandbox's.
				return p.namespace, p.name, "", nil
			}
			return "", "", "", fmt.Errorf("pod UID %s: %w", podUID, ErrUnknown)
		}
		l := n.pending
		if l == nil {
			l = n.list()
		}
		n.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return "", "", "", fmt.Errorf("waiting for the container runtime to list its pods: %w", ctx.Err())
		}
		if l.err != nil {
			return "", "", "", l.err
		}
		n.mu.Lock()
	}
}

// list starts a listing, no sooner than Interval after the last one began.
// n.mu is held.
func (n *Names) list() *listing {
	l := &listing{done: make(chan struct{})}
	n.pending = l
	wait := time.Until(n.lastStart.Add(n.opts.Interval))
	go func() {
		err := n.refresh(wait)
		n.mu.Lock()
		defer n.mu.Unlock()
		l.err = err
		n.pending = nil
		close(l.done)
	}()
	return l
}

// refresh waits, then lists the sandboxes and containers and makes them
// the view, if that works.
func (n *Names) refresh(wait time.Duration) error {
	if n.ctx.Err() != nil {
		return errClosed
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-n.ctx.Done():
			return errClosed
		}
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.Timeout)
	defer cancel()
	n.mu.Lock()
	n.begun++
	seq := n.begun
	n.lastStart = time.Now()
	n.mu.Unlock()
	sb, err := n.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("listing the container runtime's pod sandboxes: %w", err)
	}
	// No state filter: the container an OOM kill ended has exited.
	cs, err := n.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("listing the container runtime's containers: %w", err)
	}
	sandboxes, containers := sb.GetItems(), cs.GetContainers()
	pods := make(map[string]pod, len(sandboxes))
	conts := make(map[string]container, len(containers)+len(sandboxes))
	sandboxPod := make(map[string]string, len(sandboxes))
	for _, s := range sandboxes {
		m := s.GetMetadata()
		if m.GetUid() == "" {
			continue
		}
		pods[m.GetUid()] = pod{namespace: m.GetNamespace(), name: m.GetName()}
		sandboxPod[s.GetId()] = m.GetUid()
		// The sandbox's own process has a container cgroup too.
		conts[s.GetId()] = container{podUID: m.GetUid()}
	}
	for _, c := range containers {
		uid := c.GetLabels()["io.kubernetes.pod.uid"]
		if uid == "" {
			uid = sandboxPod[c.GetPodSandboxId()]
		}
		name := c.GetMetadata().GetName()
		if name == "" {
			name = c.GetLabels()["io.kubernetes.container.name"]
		}
		conts[c.GetId()] = container{name: name, podUID: uid}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pods, n.conts, n.known = pods, conts, seq
	return nil
}

// Close ends the listing under way; after it, only what was already
// known is answered. The runtime's connection is left to its owner.
func (n *Names) Close() {
	n.cancel()
}
