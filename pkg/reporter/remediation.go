package reporter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// UnitRestarter restarts a systemd unit; the real one talks to systemd over
// D-Bus, tests use a double.
type UnitRestarter interface {
	RestartUnit(ctx context.Context, unit string) (result string, err error)
}

// StaleLeaseCounter counts the other nodes' Leases and how many are stale,
// so that a control-plane problem, which stales every lease at once, is not
// mistaken for this node's kubelet.
type StaleLeaseCounter interface {
	OtherStaleLeases(ctx context.Context) (stale, total int, err error)
}

// clusterWide says whether stale leases elsewhere look like a cluster-wide
// problem: at least three, and at least a tenth of the nodes. A few dead
// nodes that nobody has deleted yet do not count.
func clusterWide(stale, total int) bool {
	return stale >= 3 && stale*10 >= total
}

// RestartKubeletOptions configure the opt-in kubelet restart.
type RestartKubeletOptions struct {
	Unit string
	// When is the condition type that, held True for After, triggers it.
	When  []string
	After time.Duration
	// Cooldown is the least time between two restarts.
	Cooldown time.Duration
	// Timeout bounds the restart job.
	Timeout time.Duration
}

// KubeletRestarter is a sink that restarts the kubelet when a condition that
// says the kubelet is stuck (KubeletLeaseStale: the known workaround for
// kubernetes/kubernetes#87615) has held for a while, at most once per
// cooldown, with an event before and after. It acts from a goroutine of its
// own: Finding only notes the state, so the reporter's lock is never held
// across a restart.
type KubeletRestarter struct {
	opts     RestartKubeletOptions
	restart  UnitRestarter
	leases   StaleLeaseCounter
	report   func(finding.Finding)
	log      *zap.Logger
	attempts *prometheus.CounterVec

	mu    sync.Mutex
	since map[string]time.Time // condition type -> when it turned True
	last  time.Time            // last restart
	wake  chan struct{}
}

// NewKubeletRestarter returns the sink; report is where its events go (the
// reporter's Report). leases may be nil when the agent cannot see other
// nodes' leases.
func NewKubeletRestarter(opts RestartKubeletOptions, restart UnitRestarter, leases StaleLeaseCounter, report func(finding.Finding), log *zap.Logger, reg prometheus.Registerer) *KubeletRestarter {
	k := &KubeletRestarter{opts: opts, restart: restart, leases: leases, report: report, log: log,
		since: map[string]time.Time{}, wake: make(chan struct{}, 1),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_remediation_actions_total",
			Help: "Remediation decisions, by action and result (restarted, failed, refused, cooling).",
		}, []string{"action", "result"}),
	}
	reg.MustRegister(k.attempts)
	return k
}

func (k *KubeletRestarter) Finding(f finding.Finding) {
	if f.Kind != finding.KindCondition || !k.watches(f.Type) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if f.Status == finding.StatusTrue {
		if _, ok := k.since[f.Type]; !ok {
			k.since[f.Type] = time.Now()
		}
	} else {
		delete(k.since, f.Type)
	}
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func (k *KubeletRestarter) watches(t string) bool {
	for _, w := range k.opts.When {
		if w == t {
			return true
		}
	}
	return false
}

// due returns the condition that has held long enough, and when a restart
// may next happen.
func (k *KubeletRestarter) due(now time.Time) (string, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	wait := time.Duration(-1)
	for t, since := range k.since {
		held := now.Sub(since)
		if held < k.opts.After {
			if w := k.opts.After - held; wait < 0 || w < wait {
				wait = w
			}
			continue
		}
		if !k.last.IsZero() && now.Sub(k.last) < k.opts.Cooldown {
			k.attempts.WithLabelValues("restart-kubelet", "cooling").Inc()
			return "", k.opts.Cooldown - now.Sub(k.last)
		}
		return t, 0
	}
	return "", wait
}

// Run acts until ctx ends.
func (k *KubeletRestarter) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		cond, wait := k.due(time.Now())
		if cond != "" {
			k.act(ctx, cond)
			continue
		}
		if wait < 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-k.wake:
		case <-timer.C:
		}
	}
}

func (k *KubeletRestarter) act(ctx context.Context, cond string) {
	k.mu.Lock()
	k.last = time.Now()
	held := time.Since(k.since[cond]).Round(time.Second)
	k.mu.Unlock()
	if k.leases != nil {
		lctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
		n, total, err := k.leases.OtherStaleLeases(lctx)
		cancel()
		var refusal string
		switch {
		case err != nil:
			// Unable to see the other nodes is what a network partition or
			// a control-plane outage looks like from here, and then every
			// kubelet logs lease failures: restarting them all would make
			// it worse. Only a kubelet failing alone is restarted.
			k.log.Warn("reading the other nodes' leases before restarting the kubelet failed", zap.Error(err))
			refusal = fmt.Sprintf("%s has held for %s, but the other nodes' leases cannot be read (%v): a control-plane or network outage cannot be ruled out; not restarting %s",
				cond, held, err, k.opts.Unit)
		case clusterWide(n, total):
			refusal = fmt.Sprintf("%s has held for %s, but %d of %d other nodes' leases are stale too: the control plane, not this kubelet, is the likely cause; not restarting %s",
				cond, held, n, total, k.opts.Unit)
		}
		if refusal != "" {
			k.attempts.WithLabelValues("restart-kubelet", "refused").Inc()
			k.report(finding.Event(finding.SeverityWarning, "KubeletRestartRefused", refusal))
			return
		}
	}
	k.report(finding.Event(finding.SeverityWarning, "KubeletRestarting", fmt.Sprintf("%s has held for %s; restarting %s", cond, held, k.opts.Unit)))
	// The cooldown runs from the restart itself, not from the start of
	// this attempt: reading the other leases can take a variable time, and
	// two restarts must never be closer than the cooldown.
	k.mu.Lock()
	k.last = time.Now()
	k.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	result, err := k.restart.RestartUnit(rctx, k.opts.Unit)
	if err != nil || result != "done" {
		k.attempts.WithLabelValues("restart-kubelet", "failed").Inc()
		k.log.Error("restarting the kubelet failed", zap.String("unit", k.opts.Unit), zap.String("result", result), zap.Error(err))
		k.report(finding.Event(finding.SeverityWarning, "KubeletRestartFailed", fmt.Sprintf("restarting %s: result %q, error %v", k.opts.Unit, result, err)))
		return
	}
	k.attempts.WithLabelValues("restart-kubelet", "restarted").Inc()
	k.report(finding.Event(finding.SeverityInfo, "KubeletRestarted", fmt.Sprintf("restarted %s after %s held for %s", k.opts.Unit, cond, held)))
}
