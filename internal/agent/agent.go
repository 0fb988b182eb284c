package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"

	"github.com/nodeguard/nodeguard/internal/evidence"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/cri"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/criconn"
	"github.com/nodeguard/nodeguard/pkg/cripods"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/nodeguard/nodeguard/pkg/remediation"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// Deps are what the agent is built on besides its configuration.
type Deps struct {
	Log *zap.Logger
	// Metrics is where every part registers its metrics, and what
	// /metrics serves.
	Metrics *prometheus.Registry
	// Clients talk to the API server; nil runs standalone, printing
	// findings to Out in cfg.Output's format.
	Clients *kube.Clients
	Out     io.Writer
	// BootTime is when the node booted, for the rule on adopting the
	// Node's conditions; zero keeps every condition found there.
	BootTime time.Time
	// Systemd restarts the kubelet when remediation asks; nil is the
	// host's systemd over D-Bus.
	Systemd remediation.UnitRestarter
}

// Agent is nodeguard assembled: the checks under their supervisor, and the
// reporting side they feed.
type Agent struct {
	cfg        *config.Config
	log        *zap.Logger
	metrics    *prometheus.Registry
	Checks     *Checks
	Supervisor *checks.Supervisor
	*Reporting
	health *health
	// capturer writes the evidence of each transition to True; nil when
	// evidence is off.
	capturer *evidence.Capturer
	// cri is the one connection to the container runtime, closed once
	// the checks and the reporting that use it have stopped.
	cri *criconn.Conn
}

// Build assembles the agent from cfg and reg, the checks this binary
// knows. Nothing runs until Run.
func Build(cfg *config.Config, reg checks.Registry, deps Deps) (*Agent, error) {
	deps = deps.withDefaults()
	leases := deps.leaseWatcher(cfg.NodeName)
	// One connection to the runtime for the cri check and the reporter's
	// pod names; it dials at its first call, so an agent that makes none
	// opens none.
	cri := criconn.New(criEndpoint(cfg))
	env := checks.Env{
		Log: deps.Log, NodeName: cfg.NodeName, ProcPath: cfg.ProcPath, SysPath: cfg.SysPath,
		StateDir: cfg.StateDir, Metrics: deps.Metrics, Now: time.Now, CRI: cri,
	}
	if leases != nil {
		env.Lease = leases
	}
	var recent *evidence.Recent
	if cfg.Evidence.On() {
		// The wiring owns the rings: the log checks feed them, the
		// capturer reads them, and neither knows the other.
		recent = evidence.NewRecent(cfg.Evidence.KernelLogBytes, cfg.Evidence.ServiceLogBytes)
		env.Recent, env.RecentUnits = recent, cfg.Evidence.ServiceUnits
	}
	built, err := BuildChecks(cfg, reg, env)
	if err != nil {
		return nil, err
	}
	var degraded *degradedCheck
	if cfg.ReportDegraded {
		// Run by the supervisor like any check; what it watches is
		// filled in below, once built.
		degraded = &degradedCheck{period: degradedPeriod, now: time.Now}
		built.Running = append(built.Running, degraded)
		built.Owned = reporter.UniqueDefaults(append(built.Owned, finding.Degraded))
	}
	var capturer *evidence.Capturer
	var extra []reporter.Sink
	if recent != nil {
		capturer = newCapturer(cfg, built.Owned, recent, deps)
		extra = append(extra, capturer)
	}
	reporting, err := buildReporting(cfg, built.Owned, deps, leases, cri, extra...)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: deps.Log, metrics: deps.Metrics, Checks: built,
		Supervisor: &checks.Supervisor{Log: deps.Log, Metrics: checks.NewSupervisorMetrics(deps.Metrics)},
		Reporting:  reporting, capturer: capturer, cri: cri,
	}
	if degraded != nil {
		degraded.down = a.Supervisor.DownPastBackoff
		if reporting.Node != nil {
			degraded.dropped = reporting.Node.EventDropped
		}
	}
	// A check that cannot stay up for this long makes /healthz fail, so that
	// the liveness probe restarts the pod (a dead source is no monitor).
	a.health = newHealth(func() []string { return a.Supervisor.Down(5 * time.Minute) })
	return a, nil
}

// Handler serves /metrics and /healthz.
func (a *Agent) Handler() http.Handler { return handler(a.metrics, a.health) }

// Run runs the agent until ctx ends, then stops it within about grace: the
// checks first, then the node sink, so that what the checks report while
// stopping still goes out. It returns a *reporter.ForeignWriterError,
// having written no condition, when another writer owns an aggregate
// condition on the Node.
func (a *Agent) Run(ctx context.Context, grace time.Duration) error {
	if a.cfg.ListenAddress != "" {
		srv := &http.Server{Addr: a.cfg.ListenAddress, Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics server stopped", zap.Error(err))
				a.health.fail("http", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
	}
	// A refusal at the Node's read (another writer of the aggregate
	// conditions) stops the checks as a signal would, and is what Run
	// returns.
	ctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	// The node sink outlives the signal until the checks have stopped, so
	// that what they report while stopping still goes out.
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSink()
	a.log.Info("nodeguard started", zap.Bool("standalone", a.Reporting.Node == nil), zap.Int("checks", len(a.Checks.Running)))
	// The checks start at once, not after the Node has been read: reading
	// it waits out an API server outage, and detection must not. The
	// reporter holds what they find until then.
	started := make(chan struct{})
	go func() {
		defer close(started)
		err := a.Reporting.Start(ctx, sinkCtx, func(err error) {
			a.log.Error("node reporter stopped", zap.Error(err))
			if ctx.Err() == nil {
				a.health.fail("reporter", err)
			}
		})
		var foreign *reporter.ForeignWriterError
		switch {
		case errors.As(err, &foreign):
			a.log.Error("another writer owns an aggregate condition on the Node; stopping", zap.String("condition", foreign.Condition),
				zap.String("manager", foreign.Manager), zap.String("reason", foreign.Reason))
			refuse(err)
		case err != nil:
			a.log.Info("stopped before the node could be read", zap.Error(err))
		}
	}()
	if !a.cfg.KeepStartupPages {
		go ReleaseStartupPagesAfter(ctx, a.log)
	}
	if a.capturer != nil {
		// Its events go through the reporter like every other; it stops
		// with ctx, at once unless a write is stuck in the kernel.
		go a.capturer.Run(ctx, a.Reporter.Report)
	}
	a.Supervisor.Checks, a.Supervisor.Emit = a.Checks.Running, a.Reporter.Report
	if stuck := a.Supervisor.Run(ctx, grace/2); len(stuck) > 0 {
		a.log.Warn("checks did not stop in time", zap.Strings("checks", stuck))
	}
	<-started // Start returns once ctx has ended, if not before
	stopSink()
	if !a.Reporting.Wait(grace / 2) {
		a.log.Warn("reporting (node sink, informers, remediation) did not stop in time")
	}
	a.cri.Close()
	a.log.Info("nodeguard stopped")
	if err := context.Cause(ctx); errors.As(err, new(*reporter.ForeignWriterError)) {
		return err
	}
	return nil
}

// Reporting is the reporter, its sinks, and the informers and actions that
// go with them: everything of the agent but the checks. hack/bench runs
// it alone, fed by simulated checks.
type Reporting struct {
	Reporter *reporter.Reporter
	// Node, Leases and the rest are nil when standalone.
	Node   *reporter.NodeSink
	Leases *kube.LeaseWatcher
	pods   *cripods.Names
	// ownCRI is the connection to the runtime the reporting made for
	// itself, closed when it stops; nil when the agent's is shared.
	ownCRI    *criconn.Conn
	restarter *remediation.KubeletRestarter
	taints    *remediation.TaintSink
	bootTime  time.Time

	wg       sync.WaitGroup
	nodeDone chan struct{}
}

// BuildReporting assembles the reporting side for the owned condition
// types.
func BuildReporting(cfg *config.Config, owned []finding.ConditionDefault, deps Deps) (*Reporting, error) {
	deps = deps.withDefaults()
	cri := criconn.New(criEndpoint(cfg))
	r, err := buildReporting(cfg, owned, deps, deps.leaseWatcher(cfg.NodeName), cri)
	if r != nil {
		r.ownCRI = cri
	}
	return r, err
}

// newCapturer makes the capturer of evidence for the owned condition types
// cfg.Evidence names (by default every one not marked noisy).
func newCapturer(cfg *config.Config, owned []finding.ConditionDefault, recent *evidence.Recent, deps Deps) *evidence.Capturer {
	ec := cfg.Evidence
	types, unknown := evidence.Wanted(owned, ec.Conditions)
	if len(unknown) > 0 {
		deps.Log.Warn("evidence.conditions names condition types no enabled check owns; they never capture", zap.Strings("conditions", unknown))
	}
	return evidence.New(evidence.Options{
		Dir: EvidenceDir(cfg), Conditions: types, Window: ec.LogWindow.Duration,
		MaxDirBytes: ec.MaxDirBytes, MaxTotalBytes: ec.MaxTotalBytes, TopProcesses: ec.TopProcesses,
		Timeout: ec.Timeout.Duration, QueueSize: ec.QueueSize, ProcPath: cfg.ProcPath, Recent: recent,
		Log: deps.Log.With(zap.String("part", "evidence")), Metrics: deps.Metrics,
	})
}

// EvidenceDir is where the captures go: the one place that says so, for
// the capturer and the bundle.
func EvidenceDir(cfg *config.Config) string { return filepath.Join(cfg.StateDir, "evidence") }

// withDefaults fills what a caller may leave out: no log, and a registry of
// its own.
func (d Deps) withDefaults() Deps {
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	return d
}

func (d Deps) leaseWatcher(nodeName string) *kube.LeaseWatcher {
	if d.Clients == nil {
		return nil
	}
	w := kube.NewLeaseWatcher(d.Clients.Watches, nodeName)
	w.Confirm = d.Clients.Requests
	w.Ready = kube.ServerReady(d.Clients.Requests)
	return w
}

// buildReporting assembles the reporting side, whose pod names ask the
// runtime over cri; extra sinks (the evidence capturer) are told what
// every sink is.
func buildReporting(cfg *config.Config, owned []finding.ConditionDefault, deps Deps, leases *kube.LeaseWatcher, cri *criconn.Conn, extra ...reporter.Sink) (*Reporting, error) {
	r := &Reporting{Leases: leases, bootTime: deps.BootTime, nodeDone: make(chan struct{})}
	var aggregates []finding.Aggregate
	if cfg.Reporter.AggregateConditions {
		var err error
		if aggregates, err = reporter.OwnedAggregates(owned, finding.Aggregates()); err != nil {
			return nil, err
		}
	}
	newReporter := func(sinks ...reporter.Sink) error {
		r.Reporter = reporter.New(deps.Log, owned, sinks...)
		return r.Reporter.PublishAggregates(aggregates)
	}
	sinks := append([]reporter.Sink{reporter.NewMetricsSink(deps.Metrics)}, extra...)
	if deps.Clients == nil {
		out := deps.Out
		if out == nil {
			out = io.Discard
		}
		sinks = append(sinks, reporter.NewWriterSink(out, cfg.Output))
		return r, newReporter(sinks...)
	}
	client := deps.Clients.Requests
	// Events name an OOM kill's pod as the runtime knows it: the agent
	// need not watch the node's pods on the API server for that.
	r.pods = cripods.New(cri.Runtime(), cripods.Options{})
	opts := NodeSinkOptions(cfg.Reporter, cfg.NodeName)
	opts.Pods = r.pods
	opts.Aggregates = aggregates
	if cfg.StateDir != "" {
		opts.SpoolDir = filepath.Join(cfg.StateDir, "events")
	}
	node, err := reporter.NewNodeSink(client, deps.Log, deps.Metrics, opts)
	if err != nil {
		return nil, err
	}
	r.Node = node
	leases.Observe, leases.Reachable = r.Node.ObserveAPI, r.Node.APIReachable
	sinks = append(sinks, r.Node, logSink{deps.Log})
	if rk := cfg.Remediation.RestartKubelet; rk.Enabled {
		systemd := deps.Systemd
		if systemd == nil {
			systemd = remediation.SystemdRestarter{}
		}
		r.restarter = remediation.NewKubeletRestarter(remediation.RestartKubeletOptions{
			Unit: rk.Unit, When: rk.When, After: rk.After.Duration, Cooldown: rk.Cooldown.Duration, Timeout: rk.Timeout.Duration,
		}, systemd, kube.StaleLeases{Client: client, NodeName: cfg.NodeName}, deps.Log, deps.Metrics)
		sinks = append(sinks, r.restarter)
	}
	for _, t := range cfg.Remediation.Taints {
		if !slices.ContainsFunc(owned, func(d finding.ConditionDefault) bool { return d.Type == t.Condition }) {
			// The taint sink follows the reporter's conditions only: a
			// typo or a disabled check would make the rule never apply.
			deps.Log.Warn("a taint rule names a condition type no enabled check owns; it will never taint the node",
				zap.String("condition", t.Condition), zap.String("taint", t.Key))
		}
	}
	if len(cfg.Remediation.Taints) > 0 {
		r.taints = remediation.NewTaintSink(client, cfg.NodeName, taintRules(cfg.Remediation.Taints), deps.Log)
		sinks = append(sinks, r.taints)
	}
	return r, newReporter(sinks...)
}

// Start starts the informers and remediation (until ctx ends) and the node
// sink (until sinkCtx ends; failed hears if it stops on its own), then
// reads the Node once and starts the Reporter from its conditions (what
// the checks reported meanwhile is applied over them). It returns an error
// only when ctx ended before the Node could be read.
func (r *Reporting) Start(ctx, sinkCtx context.Context, failed func(error)) error {
	if r.Node == nil {
		close(r.nodeDone)
		r.Reporter.Start(nil, r.bootTime)
		return nil
	}
	r.run(func() {
		<-ctx.Done()
		r.pods.Close()
		if r.ownCRI != nil {
			r.ownCRI.Close()
		}
	})
	r.run(func() { r.Leases.Run(ctx) })
	if r.restarter != nil {
		r.run(func() { r.restarter.Run(ctx, r.Reporter.Report) })
	}
	if r.taints != nil {
		r.run(func() { r.taints.Run(ctx) })
	}
	go func() {
		defer close(r.nodeDone)
		err := r.Node.Run(sinkCtx)
		if err == nil {
			err = errors.New("the node reporter stopped")
		}
		if failed != nil && sinkCtx.Err() == nil {
			failed(fmt.Errorf("node reporter: %w", err))
		}
	}()
	found, err := r.Node.ReadConditions(ctx)
	if err != nil {
		return fmt.Errorf("reading the node's conditions: %w", err)
	}
	r.Reporter.Start(found, r.bootTime)
	return nil
}

func (r *Reporting) run(f func()) {
	r.wg.Add(1)
	go func() { defer r.wg.Done(); f() }()
}

// Wait waits up to timeout for the node sink, and then the informers and
// remediation, to stop; it says whether they did.
func (r *Reporting) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { <-r.nodeDone; r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// NodeSinkOptions maps the reporter's configuration, whose defaults are
// config.Default's, onto the node sink's options.
func NodeSinkOptions(rc config.ReporterConfig, nodeName string) reporter.NodeSinkOptions {
	return reporter.NodeSinkOptions{
		NodeName:         nodeName,
		MinWriteInterval: rc.MinWriteInterval.Duration,
		Heartbeat:        rc.Heartbeat.Duration,
		EventQPS:         float32(rc.EventQPS),
		EventBurst:       rc.EventBurst,
		SpoolSize:        rc.EventSpoolSize,
		Reasons:          rc.Reasons,
	}
}

// criEndpoint is the container runtime's CRI socket as the cri check is
// configured, whether it runs or not, so that the agent has one setting and
// one default for it.
func criEndpoint(cfg *config.Config) string {
	if c, ok := cfg.CheckConfigs[cri.Name].(*cri.Config); ok {
		return c.Endpoint
	}
	return cri.DefaultConfig().Endpoint
}

// taintRules turns the config's taint rules into remediation's.
func taintRules(in []config.TaintRule) []remediation.TaintRule {
	out := make([]remediation.TaintRule, len(in))
	for i, r := range in {
		out[i] = remediation.TaintRule{Condition: r.Condition, Key: r.Key, Effect: corev1.TaintEffect(r.Effect)}
	}
	return out
}
