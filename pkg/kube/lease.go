// Package kube holds the agent's read-only views of the cluster: informers
// limited to this node's objects, which the wiring hands to checks behind
// narrow interfaces. Checks never hold an API client; the reporter alone
// writes.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// NodeLeaseNamespace is where kubelets keep their heartbeat Leases.
const NodeLeaseNamespace = "kube-node-lease"

// LeaseWatcher keeps this node's Lease from a reflector limited to that one
// object, and whether its view of the API server is current: the last list
// or watch succeeded and no request has failed since.
type LeaseWatcher struct {
	reflector *cache.Reflector
	store     cache.Store
	name      string
	// Observe, when set before Run, is told the result of every list and
	// watch, for the agent's view of the API server's reachability.
	Observe func(error)
	// Reachable, when set before Run, is the agent's wider view of the API
	// server (every request it makes, not only this watch's): whether it
	// answers, and since when. The view is current only while both agree.
	Reachable func() (up bool, since time.Time)
	// Confirm, when set before Run, is what Reread reads the Lease with.
	// The lease check rereads before it calls a Lease stale, so a watch
	// that stalled while its connection stayed up (watches last 5 to 10
	// minutes) cannot make it cry wolf. A loop that read on its own after
	// 30 s of silence did so before; it woke the agent every 10 s for
	// that, and the check's read is the one that matters.
	Confirm Client
	// Ready, when set before Run, is asked by Reread once it has read the
	// Lease: whether the server is ready (ServerReady), for a verdict
	// that must not blame the kubelet for a server that is not.
	Ready func(context.Context) error

	mu        sync.Mutex
	synced    bool
	lastOK    time.Time
	lastError time.Time
	// upSince is when the view last became current: the first success
	// after a failure, or the first list.
	upSince   time.Time
	lastEvent time.Time
	// read is the Lease as Reread last read it.
	read *coordinationv1.Lease
	// readAt is when Reread made read; readMissing says
	// it found no Lease.
	readAt      time.Time
	readMissing bool
}

// watchBackoff is how the reflector retries a failed list or watch. client-go's
// default grows to 30 s with as much again of jitter, so after an outage of
// a minute the watch came back up to a minute after the API server did, and
// the kubelet's renewals in between went unseen (the 30 s direct read saw
// them first). A watch of one small object that cannot return within a
// kubelet's renew interval (10 s) is no use for judging renewals; at 1,000
// nodes a try every 4 to 6 s is some 200 small requests a second at a
// recovering API server, against the kubelets' own 1,000 renewals every 10 s.
var watchBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 10, Cap: 4 * time.Second}

// NewLeaseWatcher watches the Lease named nodeName.
func NewLeaseWatcher(client Client, nodeName string) *LeaseWatcher {
	w := &LeaseWatcher{name: nodeName}
	sel := fields.OneTermEqualSelector("metadata.name", nodeName).String()
	w.store = &leaseStore{Store: cache.NewStore(cache.MetaNamespaceKeyFunc), w: w}
	b := watchBackoff
	w.reflector = cache.NewReflectorWithOptions(selectedListWatch(client, client.CoordinationV1().Leases(NodeLeaseNamespace), sel, w.record),
		&coordinationv1.Lease{}, w.store, cache.ReflectorOptions{Name: "lease " + NodeLeaseNamespace + "/" + nodeName, Backoff: &b})
	return w
}

// leaseStore is the reflector's store; every change it is told of is news
// from the server, and a Replace is a completed list.
type leaseStore struct {
	cache.Store
	w *LeaseWatcher
}

func (s *leaseStore) Add(obj any) error    { s.w.event(); return s.Store.Add(obj) }
func (s *leaseStore) Update(obj any) error { s.w.event(); return s.Store.Update(obj) }
func (s *leaseStore) Delete(obj any) error { s.w.event(); return s.Store.Delete(obj) }
func (s *leaseStore) Replace(list []any, rv string) error {
	err := s.Store.Replace(list, rv)
	s.w.mu.Lock()
	s.w.synced = true
	s.w.mu.Unlock()
	s.w.event()
	return err
}

func (w *LeaseWatcher) record(err error) {
	if w.Observe != nil {
		w.Observe(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if err != nil {
		w.lastError = now
		return
	}
	if w.lastOK.IsZero() || w.lastError.After(w.lastOK) {
		w.upSince = now
	}
	w.lastOK = now
}

func (w *LeaseWatcher) event() {
	w.record(nil)
	w.mu.Lock()
	w.lastEvent = time.Now()
	w.mu.Unlock()
}

// Run keeps the view until ctx ends.
func (w *LeaseWatcher) Run(ctx context.Context) {
	w.reflector.RunWithContext(ctx)
}

// Reread reads the Lease from the API server now, for a verdict that must
// not rest on a quiet watch alone: while a server drains before it stops it
// refuses new requests (the kubelet's renewals among them) while the open
// watch stays up and quiet, so an old Lease is news only once a read made
// after it went old has found it so. A read that fails leaves the view as
// it was. Without Confirm there is nothing to read with, and the watch's
// word stands.
func (w *LeaseWatcher) Reread(ctx context.Context) error {
	if w.Confirm == nil {
		return nil
	}
	lease, err := w.Confirm.CoordinationV1().Leases(NodeLeaseNamespace).Get(ctx, w.name, metav1.GetOptions{})
	now := time.Now()
	switch {
	case apierrors.IsNotFound(err):
		w.mu.Lock()
		w.read, w.readAt, w.readMissing = nil, now, true
		w.mu.Unlock()
		return nil
	case err != nil:
		return fmt.Errorf("reading the Lease %s/%s: %w", NodeLeaseNamespace, w.name, err)
	}
	w.mu.Lock()
	w.read, w.readAt, w.readMissing = lease, now, false
	w.mu.Unlock()
	if w.Ready != nil {
		return w.Ready(ctx)
	}
	return nil
}

// ErrServerNotReady says the API server answers but its /readyz fails: a
// restarted server serves some clients before it can serve all (before its
// authorizers have synced it refused 5,000 simulated kubelets' renewals
// while it answered their agents), so an old Lease then says nothing of
// the kubelet.
var ErrServerNotReady = errors.New("the API server is not ready")

// ServerReady asks the API server's /readyz with c (every client may: the
// built-in system:public-info-viewer role), for LeaseWatcher.Ready. A
// failing check (an answer of 500 or more) or 429 is
// ErrServerNotReady. A refusal to say (403, 404: a cluster that
// took the role away) is no error: the read alone decides, as without
// Ready, rather than no verdict ever.
func ServerReady(c Client) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := c.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		var status apierrors.APIStatus
		if err == nil {
			return nil
		}
		if !errors.As(err, &status) || status.Status().Code == 0 {
			return fmt.Errorf("asking whether the API server is ready: %w", err)
		}
		if code := status.Status().Code; code >= 500 || code == http.StatusTooManyRequests {
			return fmt.Errorf("%w: %v", ErrServerNotReady, err)
		}
		return nil
	}
}

// NodeLease returns the Lease as last seen and whether it exists, and
// since when the view has been current: zero until the first list, and
// while a list, watch or (with Reachable) any request of the agent's fails.
// After an outage that is when the server answered again, which is as soon
// as any kubelet could have renewed.
func (w *LeaseWatcher) NodeLease() (lease *coordinationv1.Lease, exists bool, currentSince time.Time) {
	w.mu.Lock()
	if w.synced && !w.lastOK.IsZero() && !w.lastError.After(w.lastOK) {
		currentSince = w.upSince
	}
	w.mu.Unlock()
	if w.Reachable != nil && !currentSince.IsZero() {
		up, since := w.Reachable()
		switch {
		case !up:
			currentSince = time.Time{}
		case since.After(currentSince):
			currentSince = since
		}
	}
	lease, exists = w.stored()
	return lease, exists, currentSince
}

// stored is the newer of the Lease the watch brought and the one Confirm
// read.
func (w *LeaseWatcher) stored() (*coordinationv1.Lease, bool) {
	obj, ok, err := w.store.GetByKey(NodeLeaseNamespace + "/" + w.name)
	w.mu.Lock()
	read, readMissing, readAt, lastEvent := w.read, w.readMissing, w.readAt, w.lastEvent
	w.mu.Unlock()
	// A direct read newer than the watch's last news is the server's word
	// on the Lease, even where the watch has it otherwise.
	newer := readAt.After(lastEvent)
	if err != nil || !ok {
		if newer && read != nil {
			return read, true
		}
		return nil, false
	}
	lease := obj.(*coordinationv1.Lease)
	if newer && readMissing {
		return nil, false
	}
	if read != nil && renewedLater(read, lease) {
		return read, true
	}
	return lease, true
}

func renewedLater(a, b *coordinationv1.Lease) bool {
	if a.Spec.RenewTime == nil {
		return false
	}
	return b.Spec.RenewTime == nil || a.Spec.RenewTime.After(b.Spec.RenewTime.Time)
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
		if now.Sub(l.Spec.RenewTime.Time) > finding.LeaseStaleAfter(l.Spec.LeaseDurationSeconds) {
			stale++
		}
	}
	return stale, total, nil
}
