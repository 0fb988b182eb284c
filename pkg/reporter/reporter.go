// Package reporter is nodeguard's single writer. Checks hand it findings; it
// keeps the desired state of the condition types the checks own, drops what
// changes nothing, and fans findings out to sinks: the API server, stdout,
// Prometheus.
package reporter

import (
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// Sink receives findings in order. Finding must not block: a sink that talks
// to the network queues the work for a goroutine of its own.
type Sink interface {
	Finding(f checks.Finding)
}

// Reporter dedupes condition findings and passes the rest to its sinks.
type Reporter struct {
	log   *zap.Logger
	sinks []Sink

	mu    sync.Mutex
	owned map[string]bool
	// last is the last condition finding passed on per type, to drop repeats.
	last map[string]checks.Finding
}

// New returns a reporter for the given owned condition types.
func New(log *zap.Logger, owned []checks.ConditionDefault, sinks ...Sink) (*Reporter, error) {
	r := &Reporter{log: log, sinks: sinks, owned: map[string]bool{}, last: map[string]checks.Finding{}}
	for _, d := range owned {
		if r.owned[d.Type] {
			return nil, fmt.Errorf("condition type %s is owned by two checks", d.Type)
		}
		r.owned[d.Type] = true
	}
	return r, nil
}

// Report takes one finding. A condition finding for a type no check owns is
// dropped: nodeguard never writes the kubelet's conditions.
func (r *Reporter) Report(f checks.Finding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.Kind == checks.KindCondition {
		if !r.owned[f.Type] {
			r.log.Error("dropped a finding for a condition type no check owns",
				zap.String("check", f.Check), zap.String("condition", f.Type))
			return
		}
		if prev, ok := r.last[f.Type]; ok && sameCondition(prev, f) {
			return
		}
		r.last[f.Type] = f
	}
	for _, s := range r.sinks {
		s.Finding(f)
	}
}

func sameCondition(a, b checks.Finding) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message
}
