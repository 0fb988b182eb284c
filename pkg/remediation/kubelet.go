// Package remediation holds nodeguard's opt-in actions on the node: the
// kubelet restart and the taints. Each is a sink of the reporter: it reads
// the reporter's condition state and acts on its changes from a goroutine
// of its own, and reports its own events back through the reporter.
package remediation

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
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
// cooldown, with an event before and after. It acts from Run: the sink's
// methods only wake it, so the reporter is never held up by a restart.
type KubeletRestarter struct {
	opts     RestartKubeletOptions
	restart  UnitRestarter
	leases   StaleLeaseCounter
	log      *zap.Logger
	attempts *prometheus.CounterVec
	now      func() time.Time

	mu sync.Mutex
	// state is the reporter's, from Start on.
	state reporter.State
	// started is when the reporter started. A condition found True then
	// counts as holding from there, not from its lastTransitionTime: an
	// agent that restarts (or crash-loops) must watch the kubelet for After
	// before it may restart it, as it would had the condition just turned.
	started time.Time
	last    time.Time // last restart
	wake    chan struct{}
}

// NewKubeletRestarter returns the sink; call Run. leases may be nil when
// the agent cannot see other nodes' leases.
func NewKubeletRestarter(opts RestartKubeletOptions, restart UnitRestarter, leases StaleLeaseCounter, log *zap.Logger, reg prometheus.Registerer) *KubeletRestarter {
	k := &KubeletRestarter{opts: opts, restart: restart, leases: leases, log: log, now: time.Now,
		wake: make(chan struct{}, 1),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_remediation_actions_total",
			Help: "Remediation decisions, by action and result (restarted, failed, refused, cooling).",
		}, []string{"action", "result"}),
	}
	reg.MustRegister(k.attempts)
	return k
}

// Start takes the reporter's state.
func (k *KubeletRestarter) Start(state reporter.State) {
	k.mu.Lock()
	k.state, k.started = state, k.now()
	k.mu.Unlock()
	k.poke()
}

// Event is not for the restarter.
func (k *KubeletRestarter) Event(finding.Finding) {}

// Changed wakes Run when a watched condition changed.
func (k *KubeletRestarter) Changed(c reporter.Condition) {
	if slices.Contains(k.opts.When, c.Type) {
		k.poke()
	}
}

func (k *KubeletRestarter) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// due returns the condition that has held long enough and since when it
// has held, or when a restart may next happen (negative: not while nothing
// holds).
func (k *KubeletRestarter) due(now time.Time) (string, time.Time, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	wait := time.Duration(-1)
	if k.state == nil {
		return "", time.Time{}, wait
	}
	for _, t := range k.opts.When {
		c, ok := k.state.Condition(t)
		if !ok || c.Status != finding.StatusTrue {
			continue
		}
		since := c.Since
		if since.Before(k.started) {
			since = k.started
		}
		held := now.Sub(since)
		if held < k.opts.After {
			if w := k.opts.After - held; wait < 0 || w < wait {
				wait = w
			}
			continue
		}
		if !k.last.IsZero() && now.Sub(k.last) < k.opts.Cooldown {
			k.attempts.WithLabelValues("restart-kubelet", "cooling").Inc()
			return "", time.Time{}, k.opts.Cooldown - now.Sub(k.last)
		}
		return t, since, 0
	}
	return "", time.Time{}, wait
}

// Run acts until ctx ends; emit is where its events go (the reporter's
// Report).
func (k *KubeletRestarter) Run(ctx context.Context, emit func(finding.Finding)) {
	report := func(f finding.Finding) {
		f.Check, f.Time = "remediation", k.now()
		emit(f)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		cond, since, wait := k.due(k.now())
		if cond != "" {
			k.act(ctx, cond, since, report)
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

func (k *KubeletRestarter) act(ctx context.Context, cond string, since time.Time, report func(finding.Finding)) {
	k.mu.Lock()
	k.last = k.now()
	k.mu.Unlock()
	held := k.now().Sub(since).Round(time.Second)
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
			report(finding.Event(finding.SeverityWarning, "KubeletRestartRefused", refusal))
			return
		}
	}
	report(finding.Event(finding.SeverityWarning, "KubeletRestarting", fmt.Sprintf("%s has held for %s; restarting %s", cond, held, k.opts.Unit)))
	// The cooldown runs from the restart itself, not from the start of
	// this attempt: reading the other leases can take a variable time, and
	// two restarts must never be closer than the cooldown.
	k.mu.Lock()
	k.last = k.now()
	k.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	result, err := k.restart.RestartUnit(rctx, k.opts.Unit)
	if err != nil || result != "done" {
		k.attempts.WithLabelValues("restart-kubelet", "failed").Inc()
		k.log.Error("restarting the kubelet failed", zap.String("unit", k.opts.Unit), zap.String("result", result), zap.Error(err))
		report(finding.Event(finding.SeverityWarning, "KubeletRestartFailed", fmt.Sprintf("restarting %s: result %q, error %v", k.opts.Unit, result, err)))
		return
	}
	k.attempts.WithLabelValues("restart-kubelet", "restarted").Inc()
	report(finding.Event(finding.SeverityInfo, "KubeletRestarted", fmt.Sprintf("restarted %s after %s held for %s", k.opts.Unit, cond, held)))
}
