package kube

import (
	"fmt"

	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Client is the part of the API the agent uses: nodes, their status and
// events, the pods on this node, and node Leases. kubernetes.Interface
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

// NewClient makes a Client whose groups share one HTTP client, and so one
// connection and one rate limiter, as the clientset's do.
func NewClient(rc *rest.Config) (Client, error) {
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("making the HTTP client: %w", err)
	}
	// The groups' clients each make a rate limiter from QPS and Burst
	// unless one is given; one shared limiter keeps the agent's QPS the
	// agent's, not the group's.
	rc = rest.CopyConfig(rc)
	if rc.RateLimiter == nil && rc.QPS > 0 {
		if rc.Burst <= 0 {
			return nil, fmt.Errorf("making the API client: burst must be above 0 when QPS is %v", rc.QPS)
		}
		rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(rc.QPS, rc.Burst)
	}
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
