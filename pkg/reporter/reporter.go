// Package reporter is nodeguard's single writer. Checks hand it findings; it
// keeps the desired state of the condition types the checks own, drops what
// changes nothing, and fans findings out to sinks: the API server, stdout,
// Prometheus.
package reporter

import (
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"go.uber.org/zap"
)

// Sink receives findings in order. Finding must not block: a sink that talks
// to the network queues the work for a goroutine of its own.
type Sink interface {
	Finding(f finding.Finding)
}

// Reporter merges and dedupes condition findings and passes the rest to its
// sinks.
//
// A condition type may have several sources: ReadonlyFilesystem comes from
// the kernel log (a remount after errors) and from the mount table. Each
// check's latest word on a type is kept, and the type is True while any of
// them says True, so that one source saying all is well cannot hide a
// problem another sees.
type Reporter struct {
	log   *zap.Logger
	sinks []Sink

	mu    sync.Mutex
	owned map[string]bool
	// byCheck holds each check's latest finding per type.
	byCheck map[string]map[string]finding.Finding
	// last is the merged finding last passed on per type, to drop repeats.
	last map[string]finding.Finding
}

// New returns a reporter for the given owned condition types; a type may
// appear once per check that owns it.
func New(log *zap.Logger, owned []finding.ConditionDefault, sinks ...Sink) *Reporter {
	r := &Reporter{log: log, sinks: sinks, owned: map[string]bool{},
		byCheck: map[string]map[string]finding.Finding{}, last: map[string]finding.Finding{}}
	for _, d := range owned {
		r.owned[d.Type] = true
	}
	return r
}

// UniqueDefaults lists each owned type once, with the first owner's healthy
// default.
func UniqueDefaults(owned []finding.ConditionDefault) []finding.ConditionDefault {
	var out []finding.ConditionDefault
	for _, d := range owned {
		if !slices.ContainsFunc(out, func(o finding.ConditionDefault) bool { return o.Type == d.Type }) {
			out = append(out, d)
		}
	}
	return out
}

// Report takes one finding. A condition finding for a type no check owns is
// dropped: nodeguard never writes the kubelet's conditions.
func (r *Reporter) Report(f finding.Finding) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.Kind == finding.KindCondition {
		if !r.owned[f.Type] {
			r.log.Error("dropped a finding for a condition type no check owns",
				zap.String("check", f.Check), zap.String("condition", f.Type))
			return
		}
		sources := r.byCheck[f.Type]
		if sources == nil {
			sources = map[string]finding.Finding{}
			r.byCheck[f.Type] = sources
		}
		sources[f.Check] = f
		f = merge(sources)
		if prev, ok := r.last[f.Type]; ok && sameCondition(prev, f) {
			return
		}
		r.last[f.Type] = f
	}
	for _, s := range r.sinks {
		s.Finding(f)
	}
}

// merge makes one finding from each source's latest: True if any is True
// (their messages joined), else the most recent.
func merge(sources map[string]finding.Finding) finding.Finding {
	if len(sources) == 1 {
		for _, f := range sources {
			return f
		}
	}
	names := make([]string, 0, len(sources))
	for name := range sources {
		names = append(names, name)
	}
	sort.Strings(names)
	var (
		trues  []finding.Finding
		newest finding.Finding
	)
	for _, name := range names {
		f := sources[name]
		if f.Status == finding.StatusTrue {
			trues = append(trues, f)
		}
		if newest.Time.IsZero() || f.Time.After(newest.Time) {
			newest = f
		}
	}
	if len(trues) == 0 {
		return newest
	}
	out := trues[0]
	msgs := make([]string, len(trues))
	for i, f := range trues {
		msgs[i] = f.Message
		if f.Time.After(out.Time) {
			out.Time = f.Time
		}
	}
	out.Message = strings.Join(msgs, "; ")
	return out
}

func sameCondition(a, b finding.Finding) bool {
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message
}
