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

	"go.opentelemetry.io/otel/trace"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"
)

// Runtime is the part of CRI that naming needs; cri-client's
// RuntimeService is one.
type Runtime interface {
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
	Close(ctx context.Context) error
}

// ErrUnknown says the runtime, listed after the question was asked, does
// not know the pod.
var ErrUnknown = errors.New("the container runtime knows no such pod")

var errClosed = errors.New("pod names: closed")

// Options tune the lookup; New fills what is left zero.
type Options struct {
	// Timeout bounds each listing, connecting included (2 s by default).
	Timeout time.Duration
	// Interval is the least time between two listings (1 s by default), so
	// that a storm of OOM kills in pods not yet seen costs the runtime one
	// ListPodSandbox and one ListContainers a second at most.
	Interval time.Duration
	// Connect opens the runtime; by default, a CRI client on the endpoint.
	Connect func(ctx context.Context) (Runtime, error)
}

// Names looks pods up by UID and containers by ID. It asks the runtime only
// when asked about one it does not know, and then lists every pod sandbox
// and every container, exited ones included: an OOM kill's container has
// often just died. Safe for concurrent use.
type Names struct {
	opts   Options
	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu      sync.Mutex
	runtime Runtime
	pods    map[string]pod       // by pod UID
	conts   map[string]container // by container ID
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

// New returns names from the runtime at endpoint (unix:///path or a path).
// It connects at the first question, not now.
func New(endpoint string, opts Options) *Names {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Connect == nil {
		timeout := opts.Timeout
		opts.Connect = func(ctx context.Context) (Runtime, error) {
			rt, err := criclient.NewRemoteRuntimeServiceBuilder().
				WithEndpoint(endpoint).
				WithConnectionTimeout(timeout).
				WithTracerProvider(trace.TracerProvider(nil)).
				Build(ctx)
			if err != nil {
				return nil, fmt.Errorf("connecting to the container runtime at %s: %w", endpoint, err)
			}
			return rt, nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Names{opts: opts, ctx: ctx, cancel: cancel}
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
	rt := n.runtime
	n.mu.Unlock()
	if rt == nil {
		var err error
		if rt, err = n.connect(ctx); err != nil {
			return err
		}
	}
	sandboxes, err := rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return fmt.Errorf("listing the container runtime's pod sandboxes: %w", err)
	}
	// No state filter: the container an OOM kill ended has exited.
	containers, err := rt.ListContainers(ctx, nil)
	if err != nil {
		return fmt.Errorf("listing the container runtime's containers: %w", err)
	}
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

// connect opens the runtime and keeps it for the next listings, unless
// Close came first.
func (n *Names) connect(ctx context.Context) (Runtime, error) {
	rt, err := n.opts.Connect(ctx)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctx.Err() != nil {
		rt.Close(context.Background())
		return nil, errClosed
	}
	n.runtime = rt
	return rt, nil
}

// Close ends the listing under way and the connection; after it, only what
// was already known is answered.
func (n *Names) Close() {
	n.cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runtime != nil {
		n.runtime.Close(context.Background())
		n.runtime = nil
	}
}
