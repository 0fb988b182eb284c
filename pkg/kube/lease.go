// Package kube holds the agent's read-only views of the cluster: informers
// limited to this node's objects, which the wiring hands to checks behind
// narrow interfaces. Checks never hold an API client; the reporter alone
// writes.
package kube

import (
	"context"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// NodeLeaseNamespace is where kubelets keep their heartbeat Leases.
const NodeLeaseNamespace = "kube-node-lease"

// LeaseWatcher keeps this node's Lease from an informer limited to that one
// object, and whether its view of the API server is current: the last list
// or watch succeeded and no watch has failed since.
type LeaseWatcher struct {
	informer cache.SharedIndexInformer
	name     string
	// Observe, when set before Run, is told the result of every list and
	// watch, for the agent's view of the API server's reachability.
	Observe func(error)

	mu        sync.Mutex
	lastOK    time.Time
	lastError time.Time
}

// NewLeaseWatcher watches the Lease named nodeName.
func NewLeaseWatcher(client Client, nodeName string) *LeaseWatcher {
	w := &LeaseWatcher{name: nodeName}
	sel := fields.OneTermEqualSelector("metadata.name", nodeName).String()
	leases := client.CoordinationV1().Leases(NodeLeaseNamespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			list, err := leases.List(ctx, o)
			w.record(err)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			wi, err := leases.Watch(ctx, o)
			w.record(err)
			return wi, err
		},
	}
	w.informer = cache.NewSharedIndexInformer(lw, &coordinationv1.Lease{}, 0, cache.Indexers{})
	w.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		w.record(err)
		cache.DefaultWatchErrorHandler(ctx, r, err)
	})
	// Every event is news from the server.
	w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.record(nil) },
		UpdateFunc: func(any, any) { w.record(nil) },
		DeleteFunc: func(any) { w.record(nil) },
	})
	return w
}

func (w *LeaseWatcher) record(err error) {
	if w.Observe != nil {
		w.Observe(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.lastError = time.Now()
	} else {
		w.lastOK = time.Now()
	}
}

// Run keeps the view until ctx ends.
func (w *LeaseWatcher) Run(ctx context.Context) { w.informer.RunWithContext(ctx) }

// NodeLease returns the Lease as last seen and whether it exists; current
// is false until the first list and after a failed list or watch, until
// the next success.
func (w *LeaseWatcher) NodeLease() (lease *coordinationv1.Lease, exists, current bool) {
	w.mu.Lock()
	current = w.informer.HasSynced() && !w.lastOK.IsZero() && !w.lastError.After(w.lastOK)
	w.mu.Unlock()
	obj, ok, err := w.informer.GetStore().GetByKey(NodeLeaseNamespace + "/" + w.name)
	if err != nil || !ok {
		return nil, false, current
	}
	return obj.(*coordinationv1.Lease), true, current
}

// StaleLeases counts the Leases in kube-node-lease other than this node's,
// and those not renewed for half their duration. It lists them once, when asked:
// watching every node's Lease from every node would cost the API server
// far more than a list before a rare remediation.
type StaleLeases struct {
	Client   Client
	NodeName string
}

func (s StaleLeases) OtherStaleLeases(ctx context.Context) (stale, total int, err error) {
	list, err := s.Client.CoordinationV1().Leases(NodeLeaseNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, 0, err
	}
	now := time.Now()
	for _, l := range list.Items {
		if l.Name == s.NodeName || l.Spec.RenewTime == nil {
			continue
		}
		total++
		duration := 40 * time.Second
		if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
			duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		if now.Sub(l.Spec.RenewTime.Time) > duration/2 {
			stale++
		}
	}
	return stale, total, nil
}
