package remediation

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// TaintRule puts a taint on the node while a condition is True.
type TaintRule struct {
	Condition string
	Key       string
	Effect    corev1.TaintEffect
}

// TaintSink keeps the configured taints on the Node while their conditions
// are True and takes them off when they are not, so that the scheduler or
// node-healthcheck-operator can act. It owns only its taints' keys; others
// are left as they are. Opt-in: it needs to update Nodes.
//
// The conditions are the reporter's: from its start (a condition of the
// boot before a reboot is reset there, and its taint comes off) and then
// its changes. A rule for a type no check owns is left alone.
type TaintSink struct {
	client   kube.Client
	nodeName string
	rules    []TaintRule
	log      *zap.Logger

	mu sync.Mutex
	// state is the reporter's, from Start on.
	state reporter.State
	wake  chan struct{}
}

// NewTaintSink returns the sink; call Run.
func NewTaintSink(client kube.Client, nodeName string, rules []TaintRule, log *zap.Logger) *TaintSink {
	return &TaintSink{client: client, nodeName: nodeName, rules: rules, log: log, wake: make(chan struct{}, 1)}
}

// Start takes the reporter's state; the taints are set from it at once.
func (s *TaintSink) Start(state reporter.State) {
	s.mu.Lock()
	s.state = state
	s.mu.Unlock()
	s.poke()
}

// Event is not for the taints.
func (s *TaintSink) Event(finding.Finding) {}

// Changed wakes Run when a condition a rule names changed.
func (s *TaintSink) Changed(c reporter.Condition) {
	if slices.ContainsFunc(s.rules, func(r TaintRule) bool { return r.Condition == c.Type }) {
		s.poke()
	}
}

func (s *TaintSink) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run applies the taints until ctx ends, retrying failed updates.
func (s *TaintSink) Run(ctx context.Context) {
	var retryIn time.Duration
	again := time.NewTimer(time.Hour)
	again.Stop()
	defer again.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-again.C:
		}
		if err := s.apply(ctx); err != nil {
			retryIn = min(max(2*retryIn, 200*time.Millisecond), 10*time.Second)
			s.log.Warn("updating the node's taints failed; will retry", zap.Error(err), zap.Duration("retry", retryIn))
			again.Reset(retryIn)
			continue
		}
		retryIn = 0
		again.Stop()
	}
}

// want says, per condition type a rule names and the reporter owns,
// whether it is True.
func (s *TaintSink) want() map[string]bool {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	want := map[string]bool{}
	if state == nil {
		return want
	}
	for _, r := range s.rules {
		if c, ok := state.Condition(r.Condition); ok {
			want[r.Condition] = c.Status == finding.StatusTrue
		}
	}
	return want
}

// apply reads the node and writes its taints if they differ from what the
// conditions want, retrying on conflicts with other writers.
func (s *TaintSink) apply(ctx context.Context) error {
	want := s.want()
	if len(want) == 0 {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		node, err := s.client.CoreV1().Nodes().Get(reqCtx, s.nodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading node %s: %w", s.nodeName, err)
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
