package reporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// nodeClient is the node sink's way to its Node: the one read at start and
// the status patches, each bounded by a deadline and observed for the
// agent's view of the API server, and the retry policy both follow.
type nodeClient struct {
	client         kube.Client
	name           string
	log            *zap.Logger
	requestTimeout time.Duration
	maxRetry       time.Duration
	reach          *reachability
	// exclusive are the aggregate types published, which no other writer
	// may own on the Node.
	exclusive []finding.Aggregate
	// recovered is signalled when the API server answers again after an
	// outage.
	recovered chan struct{}
}

// initialRetry is the first wait after a failed request; it doubles up to
// the cap for the error.
const initialRetry = 100 * time.Millisecond

// refusedRetryInterval caps the backoff after an answer that retrying soon
// will not change: forbidden (RBAC, the admission policies), not found (a
// node name that is not the Node's), invalid. Such a node cannot report
// until someone fixes it; retrying every few seconds only adds load.
const refusedRetryInterval = 5 * time.Minute

// readConditions reads the Node, retrying until it succeeds or ctx ends,
// and returns its conditions, or a *ForeignWriterError, not retried, when
// another writer owns one of the exclusive types there.
func (n *nodeClient) readConditions(ctx context.Context) ([]Condition, error) {
	retry := initialRetry
	for {
		reqCtx, cancel := context.WithTimeout(ctx, n.requestTimeout)
		sent := time.Now()
		node, err := n.client.CoreV1().Nodes().Get(reqCtx, n.name, metav1.GetOptions{})
		cancel()
		if ctx.Err() == nil {
			n.reach.observeSent(sent, err)
		}
		if err == nil {
			n.drainRecovered()
			if err := ForeignWriter(node, n.exclusive); err != nil {
				return nil, err
			}
			return FromNode(node.Status.Conditions), nil
		}
		n.log.Warn("reading the node failed; will retry", zap.String("node", n.name), zap.Error(err))
		var ok bool
		if retry, ok = n.waitToRetry(ctx, err, retry); !ok {
			return nil, fmt.Errorf("reading node %s: %w", n.name, ctx.Err())
		}
	}
}

// FromNode turns a Node's conditions into the reporter's, for Start.
func FromNode(conds []corev1.NodeCondition) []Condition {
	out := make([]Condition, 0, len(conds))
	for _, c := range conds {
		f := finding.Condition(string(c.Type), finding.Status(c.Status), c.Reason, c.Message)
		f.Time = c.LastTransitionTime.Time
		out = append(out, Condition{Finding: f, Since: c.LastTransitionTime.Time})
	}
	return out
}

// patchStatus writes conds with a strategic-merge patch on the status
// subresource. Conditions merge by type, so the patch carries only
// nodeguard's types and cannot touch the kubelet's; it needs no resource
// version (no read-modify-write, no conflicts with the kubelet's own status
// updates), and unlike server-side apply it does not rewrite managedFields
// on every heartbeat.
func (n *nodeClient) patchStatus(ctx context.Context, conds []corev1.NodeCondition) error {
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return fmt.Errorf("encoding the status patch: %w", err)
	}
	reqCtx, cancel := context.WithTimeout(ctx, n.requestTimeout)
	defer cancel()
	_, err = n.client.CoreV1().Nodes().Patch(reqCtx, n.name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager}, "status")
	if err != nil {
		return fmt.Errorf("patching status of node %s: %w", n.name, err)
	}
	return nil
}

// retryCap is the most to wait before retrying after err.
func (n *nodeClient) retryCap(err error) time.Duration { return retryCapFor(err, n.maxRetry) }

// retryCapFor is the most to wait before retrying a request after err:
// maxRetry while the server cannot be reached or asks to slow down, far
// longer after an answer that retrying soon will not change.
func retryCapFor(err error, maxRetry time.Duration) time.Duration {
	var status apierrors.APIStatus
	if errors.As(err, &status) && !unreachable(err) {
		switch status.Status().Code {
		case http.StatusConflict, http.StatusTooManyRequests:
		default:
			return refusedRetryInterval
		}
	}
	return maxRetry
}

// waitToRetry waits out the backoff after err and returns the next one,
// or false once ctx has ended. When err says the server was not reached, a
// sign that it is back (another request of the agent's got through) ends
// the wait early, but the backoff stands until a request succeeds: a
// server whose Lease watch works while status writes fail must not be
// retried at the Lease's pace. An error the server gave (a 5xx from a
// failing webhook, a 403) is not helped by the server being up.
func (n *nodeClient) waitToRetry(ctx context.Context, err error, retry time.Duration) (time.Duration, bool) {
	recovered := n.recovered
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		recovered = nil
	}
	t := time.NewTimer(jitter(retry))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return retry, false
	case <-recovered:
		return retry, true
	case <-t.C:
	}
	return min(2*retry, n.retryCap(err)), true
}

// signalRecovered ends a wait to retry, if one is under way.
func (n *nodeClient) signalRecovered() {
	select {
	case n.recovered <- struct{}{}:
	default:
	}
}

// drainRecovered forgets a recovery signal that a success has made moot,
// so that it does not cut short a later, unrelated backoff.
func (n *nodeClient) drainRecovered() {
	select {
	case <-n.recovered:
	default:
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
