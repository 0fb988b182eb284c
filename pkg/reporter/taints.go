package reporter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// TaintRule puts a taint on the node while a condition is True.
type TaintRule struct {
	Condition string             `json:"condition"`
	Key       string             `json:"key"`
	Effect    corev1.TaintEffect `json:"effect"`
}

// TaintSink keeps the configured taints on the Node while their conditions
// are True and takes them off when they clear, so that the scheduler or
// node-healthcheck-operator can act. It owns only its taints' keys; others
// are left as they are. Opt-in: it needs to update Nodes.
type TaintSink struct {
	client   kube.Client
	nodeName string
	rules    []TaintRule
	log      *zap.Logger
	// ResyncInterval is how often the taints are compared with the Node's
	// conditions when no finding comes; set before Run.
	ResyncInterval time.Duration

	mu sync.Mutex
	// want holds, per condition type a finding has spoken of, whether it is
	// True; a type not yet heard of is left alone.
	want map[string]bool
	wake chan struct{}
}

// NewTaintSink returns the sink; call Run.
func NewTaintSink(client kube.Client, nodeName string, rules []TaintRule, log *zap.Logger) *TaintSink {
	return &TaintSink{client: client, nodeName: nodeName, rules: rules, log: log, ResyncInterval: time.Minute,
		want: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (s *TaintSink) Finding(f finding.Finding) {
	if f.Kind != finding.KindCondition {
		return
	}
	for _, r := range s.rules {
		if r.Condition != f.Type {
			continue
		}
		s.mu.Lock()
		s.want[f.Type] = f.Status == finding.StatusTrue
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return
	}
}

// Run applies the taints until ctx ends, retrying failed updates.
func (s *TaintSink) Run(ctx context.Context) {
	retryIn := time.Duration(0)
	// Besides on findings, look again now and then: a condition the node
	// sink reset on start (a kernel problem of the boot before a reboot)
	// makes no finding, and its taint must still come off.
	resync := time.NewTicker(s.ResyncInterval)
	defer resync.Stop()
	for {
		var timer <-chan time.Time
		if retryIn > 0 {
			timer = time.After(retryIn)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer:
		case <-resync.C:
		}
		if err := s.apply(ctx); err != nil {
			s.log.Warn("updating the node's taints failed; will retry", zap.Error(err))
			retryIn = min(max(2*retryIn, 200*time.Millisecond), 10*time.Second)
			continue
		}
		retryIn = 0
	}
}

// apply reads the node and writes its taints if they differ from what the
// conditions want, retrying on conflicts with other writers.
func (s *TaintSink) apply(ctx context.Context) error {
	s.mu.Lock()
	want := make(map[string]bool, len(s.want))
	for k, v := range s.want {
		want[k] = v
	}
	s.mu.Unlock()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		node, err := s.client.CoreV1().Nodes().Get(reqCtx, s.nodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", s.nodeName, err)
		}
		// A condition no finding has spoken of yet is as the Node says.
		for _, c := range node.Status.Conditions {
			if _, known := want[string(c.Type)]; !known {
				for _, r := range s.rules {
					if r.Condition == string(c.Type) {
						want[r.Condition] = c.Status == corev1.ConditionTrue
					}
				}
			}
		}
		taints, changed := s.desiredTaints(node.Spec.Taints, want)
		if !changed {
			return nil
		}
		node.Spec.Taints = taints
		if _, err := s.client.CoreV1().Nodes().Update(reqCtx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating taints of node %s: %w", s.nodeName, err)
		}
		return nil
	})
}

func (s *TaintSink) desiredTaints(current []corev1.Taint, want map[string]bool) ([]corev1.Taint, bool) {
	out := make([]corev1.Taint, 0, len(current)+len(s.rules))
	changed := false
	has := map[string]bool{}
	for _, t := range current {
		keep := true
		for _, r := range s.rules {
			on, known := want[r.Condition]
			if t.Key == r.Key && t.Effect == r.Effect && known && !on {
				keep = false
			}
		}
		if keep {
			out = append(out, t)
			has[t.Key+"/"+string(t.Effect)] = true
		} else {
			changed = true
		}
	}
	for _, r := range s.rules {
		if want[r.Condition] && !has[r.Key+"/"+string(r.Effect)] {
			now := metav1.Now()
			t := corev1.Taint{Key: r.Key, Value: "true", Effect: r.Effect}
			if r.Effect == corev1.TaintEffectNoExecute {
				t.TimeAdded = &now
			}
			out = append(out, t)
			has[r.Key+"/"+string(r.Effect)] = true
			changed = true
		}
	}
	return out, changed
}
