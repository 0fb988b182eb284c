// Package lease tells when the kubelet stops renewing its node Lease while
// the node and this agent's link to the API server are fine: the kubelet,
// not the network, is the problem (the dead HTTP/2 connection of
// kubernetes/kubernetes#87615, after which the control plane marks the node
// lost and starts its pods elsewhere while the originals keep running).
package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// Name is the check's name in configuration and metrics.
const Name = "lease"

// Config is the check's section of the config file.
type Config struct {
	// Threshold is how old renewTime may be; zero derives it from the
	// Lease: twice the kubelet's renew interval, which is a quarter of the
	// lease duration (20 s for the default 40 s lease).
	Threshold finding.Duration `json:"threshold,omitempty"`
	// Period is how often the Lease is looked at while it is stale, missing
	// or out of view. While it is fresh the check looks next when it would
	// turn stale unless renewed, and not before: a renewal only moves that
	// later, so the verdict comes as soon as with a look every period,
	// without waking the agent every second for it.
	Period finding.Duration `json:"period,omitempty"`
}

// DefaultConfig is the configuration a node gets without a config file.
func DefaultConfig() *Config {
	return &Config{Period: finding.Duration{Duration: time.Second}}
}

// Validate checks the durations.
func (c *Config) Validate() error {
	if c.Period.Duration < 100*time.Millisecond {
		return &finding.FieldError{Field: "period", Value: c.Period, Reason: "must be at least 100ms"}
	}
	return nil
}

// Registration is the check's entry in the registry. Standalone it has no
// Lease to look at, and reports nothing.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env), nil
})

// Check watches the Lease.
type Check struct {
	cfg   *Config
	log   *zap.Logger
	lease checks.LeaseView
	now   func() time.Time

	// stale says the last verdict was a stale Lease, confirmed by a read.
	stale bool
	// rereadWait grows while rereads fail; nextReread is when the next
	// may be made.
	rereadWait time.Duration
	nextReread time.Time
	// freshUntil is when the Lease last judged fresh turns stale unless
	// renewed; zero after any other verdict.
	freshUntil time.Time
	// notReady says the last confirming read found the API server not
	// ready; readySince is when one found it ready after that.
	notReady   bool
	readySince time.Time
}

// rereadTimeout bounds the read that confirms a stale Lease, within the
// probe's own deadline.
const rereadTimeout = 4 * time.Second

// maxRereadWait bounds the wait between reads that fail: through a drain
// the server refuses them at once, and at 1,000 nodes a read a second each
// would be 1,000 refused connections a second.
const maxRereadWait = 8 * time.Second

// New builds the check.
func New(cfg *Config, env checks.Env) *Check {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Log == nil {
		env.Log = zap.NewNop()
	}
	return &Check{cfg: cfg, log: env.Log, lease: env.Lease, now: env.Now}
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.KubeletLeaseStale}
}

// missingGrace is how long a missing Lease may go unreported once the view
// is current: the threshold of a default Lease.
func (c *Check) missingGrace() time.Duration {
	if c.cfg.Threshold.Duration > 0 {
		return c.cfg.Threshold.Duration
	}
	return finding.LeaseStaleAfter(nil)
}

// Run looks at the Lease until ctx ends: every period, or while it is
// fresh when it would turn stale. A look reads the view in memory and, for
// a stale verdict, makes one read bounded by rereadTimeout, so it cannot
// hang the way a disk probe can, and needs no RunPeriodic.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	if c.lease == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fs, err := c.probe(ctx)
		switch {
		case err == nil:
			for _, f := range fs {
				emit(f)
			}
		case !errors.Is(err, checks.ErrNoData):
			c.log.Warn("reading the lease failed", zap.Error(err))
		}
		t.Reset(c.nextLook())
	}
}

// nextLook is how long until the next look: the period, or while the Lease
// is fresh until just past when it would turn stale, but never longer than
// a missing Lease may go unreported (a deleted Lease changes no renewTime).
func (c *Check) nextLook() time.Duration {
	if c.freshUntil.IsZero() {
		return c.cfg.Period.Duration
	}
	return min(max(c.freshUntil.Sub(c.now())+10*time.Millisecond, c.cfg.Period.Duration), c.missingGrace())
}

// probe judges the Lease as the view has it, and a verdict of a kubelet
// that stopped renewing only after a read made now agrees: a watch that is
// up and quiet is no proof that the server takes writes (a draining server
// refuses the kubelet's renewals and keeps open watches), and a read that
// fails means this agent cannot reach the server either.
func (c *Check) probe(ctx context.Context) ([]finding.Finding, error) {
	fs, err := c.judge()
	if err != nil || !isStale(fs) {
		c.stale = false
		return fs, err
	}
	if c.stale {
		return fs, nil
	}
	now := c.now()
	if now.Before(c.nextReread) {
		return nil, checks.ErrNoData
	}
	readCtx, cancel := context.WithTimeout(ctx, rereadTimeout)
	err = c.lease.Reread(readCtx)
	cancel()
	if err != nil {
		// The first failure of a run is a warning: a read that is always
		// denied (RBAC without get on leases) would otherwise keep the
		// check from ever calling a Lease stale, and say so nowhere.
		log := c.log.Debug
		if c.rereadWait == 0 {
			log = c.log.Warn
		}
		log("a stale Lease is not confirmed: the read failed", zap.Error(err))
		c.rereadWait = min(max(2*c.rereadWait, c.cfg.Period.Duration), maxRereadWait)
		c.nextReread = now.Add(c.rereadWait)
		if errors.Is(err, kube.ErrServerNotReady) {
			c.notReady = true
		}
		return nil, checks.ErrNoData
	}
	c.rereadWait, c.nextReread = 0, time.Time{}
	if c.notReady {
		// The kubelet gets the threshold from the server's readiness, as
		// from a renewal: until then the server may have refused it.
		c.notReady, c.readySince = false, now
	}
	fs, err = c.judge()
	c.stale = err == nil && isStale(fs)
	return fs, err
}

func isStale(fs []finding.Finding) bool {
	return len(fs) == 1 && fs[0].Status == finding.StatusTrue
}

// judge is the verdict on the Lease as the view has it now.
func (c *Check) judge() ([]finding.Finding, error) {
	c.freshUntil = time.Time{}
	lease, exists, currentSince := c.lease.NodeLease()
	if currentSince.IsZero() {
		// The agent cannot see the API server either: that is the
		// network's or the control plane's problem, not the kubelet's.
		return nil, checks.ErrNoData
	}
	now := c.now()
	if !exists {
		// Just after the view became current (the agent's start, the end of
		// an outage) a kubelet may not have written its Lease yet.
		if now.Sub(currentSince) < c.missingGrace() {
			return nil, checks.ErrNoData
		}
		return []finding.Finding{finding.Condition(finding.KubeletLeaseStale.Type, finding.StatusTrue, "KubeletLeaseMissing",
			"the node has no Lease in kube-node-lease: the kubelet has not registered or cannot write it")}, nil
	}
	threshold := c.cfg.Threshold.Duration
	if threshold == 0 {
		threshold = finding.LeaseStaleAfter(lease.Spec.LeaseDurationSeconds)
	}
	if lease.Spec.RenewTime == nil {
		return []finding.Finding{finding.Condition(finding.KubeletLeaseStale.Type, finding.StatusTrue, "KubeletLeaseNeverRenewed", "the node's Lease has no renewTime")}, nil
	}
	// No kubelet could renew before the agent's view became current: after
	// an API server outage every node's Lease is old at once, and judging
	// it then would raise KubeletLeaseStale on the whole fleet. A kubelet
	// gets the threshold from the server's return, as from a renewal.
	since := lease.Spec.RenewTime.Time
	if currentSince.After(since) {
		since = currentSince
	}
	if c.readySince.After(since) {
		since = c.readySince
	}
	if age := now.Sub(since); age > threshold {
		f := finding.Condition(finding.KubeletLeaseStale.Type, finding.StatusTrue, "KubeletLeaseStale",
			fmt.Sprintf("kubelet last renewed its lease at %s, more than %s ago, while this agent reaches the API server: the kubelet, not the network, is failing",
				lease.Spec.RenewTime.UTC().Format(time.RFC3339), threshold))
		f.Facts = leaseFacts(lease, age, threshold, currentSince)
		return []finding.Finding{f}, nil
	}
	c.freshUntil = since.Add(threshold)
	return []finding.Finding{finding.KubeletLeaseStale.Healthy()}, nil
}

// leaseFacts are a stale Lease's figures, for the evidence of the
// transition: the message keeps to what does not change while it lasts.
func leaseFacts(l *coordinationv1.Lease, age, threshold time.Duration, currentSince time.Time) map[string]string {
	facts := map[string]string{
		"lease":           l.Namespace + "/" + l.Name,
		"renewTime":       l.Spec.RenewTime.UTC().Format(time.RFC3339Nano),
		"age":             age.Round(time.Millisecond).String(),
		"threshold":       threshold.String(),
		"viewCurrent":     currentSince.UTC().Format(time.RFC3339Nano),
		"resourceVersion": l.ResourceVersion,
	}
	if l.Spec.HolderIdentity != nil {
		facts["holderIdentity"] = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseDurationSeconds != nil {
		facts["leaseDurationSeconds"] = strconv.Itoa(int(*l.Spec.LeaseDurationSeconds))
	}
	return facts
}
