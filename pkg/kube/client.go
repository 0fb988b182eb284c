package kube

import (
	"context"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// Client is the part of the API the agent uses: nodes, their status and
// events, and node Leases. kubernetes.Interface
// (and so the fake clientset) satisfies it. The agent builds only these two
// groups' clients because linking the whole clientset, with a typed client
// and apply configurations for every API group, adds tens of megabytes to
// the binary and, through start-up, megabytes to every node's resident set.
type Client interface {
	CoreV1() corev1.CoreV1Interface
	CoordinationV1() coordinationv1.CoordinationV1Interface
}

type client struct {
	core         *corev1.CoreV1Client
	coordination *coordinationv1.CoordinationV1Client
}

func (c client) CoreV1() corev1.CoreV1Interface { return c.core }

func (c client) CoordinationV1() coordinationv1.CoordinationV1Interface { return c.coordination }

// ForAgent sets what the agent asks of its API client on rc: its rate
// limits, its name, protobuf, and a deadline for every request.
func ForAgent(rc *rest.Config, qps float32, burst int) {
	rc.QPS = qps
	rc.Burst = burst
	rc.UserAgent = "nodeguard"
	// Protobuf, as the kubelet speaks: every node's agent decodes its
	// Lease's renewals and its pods' changes, and protobuf costs less than
	// JSON to decode on each agent and to encode on the API server.
	// Patches still go as JSON, which strategic merge needs.
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	// Requests carry their own deadlines; this one catches any that do not
	// (client-go's event sink has none). Watches are exempt: see Clients.
	rc.Timeout = 30 * time.Second
}

// Clients are the agent's two views of one connection and one rate
// limiter: Requests, whose every call ends within the config's Timeout,
// and Watches, for informers. A watch made through Requests would be cut at
// Timeout (30 s in the agent) and opened again: at 1,000 nodes with two
// watches each, 66 needless watch requests a second at the API server
// (measured with hack/bench); client-go's reflectors ask the server for
// watches of 5 to 10 minutes themselves.
type Clients struct {
	Requests Client
	Watches  Client
}

// NewClients makes Clients from rc.
func NewClients(rc *rest.Config) (Clients, error) {
	rc = rest.CopyConfig(rc)
	// The groups' clients each make a rate limiter from QPS and Burst
	// unless one is given; one shared limiter keeps the agent's QPS the
	// agent's, not the group's.
	if rc.RateLimiter == nil && rc.QPS > 0 {
		if rc.Burst <= 0 {
			return Clients{}, fmt.Errorf("burst must be above 0 when QPS is %v", rc.QPS)
		}
		rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(rc.QPS, rc.Burst)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return Clients{}, fmt.Errorf("making the HTTP client: %w", err)
	}
	requests, err := newClient(rc, hc)
	if err != nil {
		return Clients{}, err
	}
	watchConfig := rest.CopyConfig(rc)
	watchConfig.Timeout = 0
	watches, err := newClient(watchConfig, &http.Client{Transport: hc.Transport})
	if err != nil {
		return Clients{}, err
	}
	return Clients{Requests: requests, Watches: watches}, nil
}

func newClient(rc *rest.Config, hc *http.Client) (Client, error) {
	core, err := corev1.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("making the core/v1 client: %w", err)
	}
	coordination, err := coordinationv1.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("making the coordination/v1 client: %w", err)
	}
	return client{core: core, coordination: coordination}, nil
}

// listWatcher is what a typed client offers an informer.
type listWatcher[L runtime.Object] interface {
	List(ctx context.Context, o metav1.ListOptions) (L, error)
	Watch(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
}

// SelectedInformer is an informer over the objects of objs that match the
// field selector, for an example object obj. It is built by hand rather
// than by client-go's informer factory, which links informers and listers
// for every API group and costs the agent megabytes of resident binary.
// observe, when not nil, is told the result of every list and watch.
func SelectedInformer[L runtime.Object](client Client, objs listWatcher[L], selector string, obj runtime.Object, observe func(error)) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(selectedListWatch(client, objs, selector, observe), obj, 0, cache.Indexers{})
}

// selectedListWatch lists and watches the objects of objs that match the
// field selector, telling observe (when not nil) the result of every
// request. client tells the reflector whether it can stream a watch-list
// (the fake clientset cannot), as client-go's generated informers do.
func selectedListWatch[L runtime.Object](client Client, objs listWatcher[L], selector string, observe func(error)) cache.ListerWatcher {
	if observe == nil {
		observe = func(error) {}
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			list, err := objs.List(ctx, o)
			observe(err)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			w, err := objs.Watch(ctx, o)
			observe(err)
			return w, err
		},
	}
	return cache.ToListWatcherWithWatchListSemantics(lw, client)
}
