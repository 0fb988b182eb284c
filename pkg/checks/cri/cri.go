// Package cri asks the container runtime, over CRI on its socket, whether it
// answers and is ready, and now and then whether it can still start a pod
// sandbox: a hung containerd, or one that answers but cannot run
// containers, leaves the node Ready while no pod can start or stop.
package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/criconn"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "cri"

// Config is the check's section of the config file.
type Config struct {
	// Endpoint is the runtime's CRI socket, unix:///path or a path.
	Endpoint string `json:"endpoint,omitempty"`
	// Timeout bounds each CRI call; FailureThreshold failed probes in a row
	// make the runtime unresponsive, and one good probe clears it.
	checks.ProbeSettings
	// RequireNetworkReady counts NetworkReady=false as a failure.
	RequireNetworkReady *bool `json:"requireNetworkReady,omitempty"`
	// SandboxPeriod is how often a pod sandbox is started and removed, to
	// prove that the runtime can still run containers; 0 turns that probe
	// off.
	SandboxPeriod finding.Duration `json:"sandboxPeriod,omitempty"`
	// SandboxTimeout bounds each of that probe's RunPodSandbox,
	// StopPodSandbox and RemovePodSandbox calls.
	SandboxTimeout finding.Duration `json:"sandboxTimeout,omitempty"`
	// SandboxImage is the runtime's pause image, for runtimes that do not
	// say which it is; empty asks the runtime.
	SandboxImage string `json:"sandboxImage,omitempty"`
	// SandboxCgroupParent is the cgroup parent of the probe's sandboxes;
	// empty chooses one for the runtime's cgroup driver.
	SandboxCgroupParent string `json:"sandboxCgroupParent,omitempty"`
}

// DefaultConfig: containerd's socket; three misses in a row at 10 s apart is
// 30 s of a runtime that does not answer in 5 s, well past a busy runtime's
// slow moments and well before the kubelet's PLEG gives up (3 min). A
// sandbox every 5 minutes costs the runtime about what one pod start does
// (0.1 s here), and finds a runtime that cannot start pods in 5 to 6
// minutes; a minute for each call is past what a sandbox start takes on a
// busy node (the kubelet allows it 4).
func DefaultConfig() *Config {
	return &Config{
		Endpoint: "unix:///run/containerd/containerd.sock",
		ProbeSettings: checks.ProbeSettings{
			Period:           finding.Duration{Duration: 10 * time.Second},
			Timeout:          finding.Duration{Duration: 5 * time.Second},
			FailureThreshold: 3,
		},
		SandboxPeriod:  finding.Duration{Duration: 5 * time.Minute},
		SandboxTimeout: finding.Duration{Duration: time.Minute},
	}
}

// Validate checks the settings.
func (c *Config) Validate() error {
	if c.Endpoint == "" {
		return &finding.FieldError{Field: "endpoint", Value: "", Reason: "needs the runtime's CRI socket"}
	}
	if err := c.ProbeSettings.Validate(); err != nil {
		return err
	}
	switch {
	case c.SandboxPeriod.Duration == 0:
		return nil
	case c.SandboxPeriod.Duration < time.Second:
		return &finding.FieldError{Field: "sandboxPeriod", Value: c.SandboxPeriod, Reason: "must be 0 (off) or at least 1s"}
	case c.SandboxTimeout.Duration <= 0:
		return &finding.FieldError{Field: "sandboxTimeout", Value: c.SandboxTimeout, Reason: "must be above zero"}
	}
	return nil
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env), nil
})

// Check probes the runtime.
type Check struct {
	cfg     *Config
	log     *zap.Logger
	latency *prometheus.HistogramVec
	// shared is the agent's connection to the runtime, nil when it has
	// none to this endpoint: then each Run dials one of its own.
	shared *criconn.Conn
}

// New builds the check.
func New(cfg *Config, env checks.Env) *Check {
	if env.Metrics == nil {
		env.Metrics = prometheus.NewRegistry()
	}
	c := &Check{cfg: cfg, log: env.Log, latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodeguard_cri_request_duration_seconds",
		Help:    "Latency of CRI calls to the container runtime, by method and result.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
	}, []string{"method", "result"})}
	env.Metrics.MustRegister(c.latency)
	if env.CRI != nil && env.CRI.Endpoint() == cfg.Endpoint {
		c.shared = env.CRI
	}
	return c
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.ContainerRuntimeUnresponsive}
}

// socketPath is the file behind a unix endpoint.
func (c *Check) socketPath() string {
	return strings.TrimPrefix(c.cfg.Endpoint, "unix://")
}

type prober struct {
	c        *Check
	verdict  *verdict
	runtime  runtimeapi.RuntimeServiceClient
	failures checks.InARow
}

// Run probes every period, and starts a sandbox every sandboxPeriod in a
// loop of its own (a sandbox may take its time; the calls that say whether
// the runtime answers must not wait for it), until ctx ends. Both go over
// one connection.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	conn := c.shared
	if conn == nil {
		conn = criconn.New(c.cfg.Endpoint)
		// After the sandbox loop, whose clean-up may outlive ctx a little.
		defer conn.Close()
	}
	v := &verdict{emit: emit, endpoint: c.cfg.Endpoint}
	var wg sync.WaitGroup
	defer wg.Wait()
	if c.cfg.SandboxPeriod.Duration > 0 {
		s := &sandboxProber{c: c, verdict: v, runtime: conn.Runtime(), images: conn.Images()}
		wg.Go(func() { s.run(ctx) })
	}
	p := &prober{c: c, verdict: v, runtime: conn.Runtime()}
	return checks.RunLogged(ctx, c.log, "CRI probe", c.cfg.Period.Duration, 3*c.cfg.Timeout.Duration+time.Second, p.probe, emit)
}

// failure is one failed probe: the reason for the condition and what was
// seen.
type failure struct {
	reason, message string
}

// verdict makes the check's one ContainerRuntimeUnresponsive finding out of
// its two probes. The reporter keeps one finding per check and type, so
// the probes must not emit on their own: the calls' probe, healthy every 10
// s, would clear a sandbox failure seconds after it was found. Each probe's
// state holds until that probe says otherwise, and the finding is True
// while either fails.
type verdict struct {
	mu       sync.Mutex
	emit     func(finding.Finding)
	endpoint string
	// calls is the calls' probe's failure, once failureThreshold in a row.
	calls *failure
	// sandbox is the sandbox probe's failure once it counts; nil while it
	// succeeds, is off, has not finished, or cannot judge.
	sandbox *failure
	// started names the image of the last sandbox started and removed,
	// while the sandbox probe succeeds; empty otherwise.
	started string
}

// setCalls records the calls' probe's verdict (nil: healthy) and emits.
func (v *verdict) setCalls(f *failure) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = f
	v.emitLocked()
}

// setSandbox records the sandbox probe's verdict and emits: a failure, or
// the image it started (empty when it could not judge).
func (v *verdict) setSandbox(f *failure, started string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sandbox, v.started = f, started
	v.emitLocked()
}

// emitLocked emits the combined finding. The calls' failure comes first:
// a runtime that does not answer fails its sandboxes too, and the calls
// say more precisely how. Each part's message stays the same while its
// failure lasts, so the combined one does too.
func (v *verdict) emitLocked() {
	cond := finding.ContainerRuntimeUnresponsive
	switch {
	case v.calls != nil && v.sandbox != nil:
		v.emit(finding.Condition(cond.Type, finding.StatusTrue, v.calls.reason, v.calls.message+"; "+v.sandbox.message))
	case v.calls != nil:
		v.emit(finding.Condition(cond.Type, finding.StatusTrue, v.calls.reason, v.calls.message))
	case v.sandbox != nil:
		v.emit(finding.Condition(cond.Type, finding.StatusTrue, v.sandbox.reason, v.sandbox.message))
	default:
		msg := v.endpoint + " answers CRI Version, Status and ListPodSandbox"
		if v.started != "" {
			msg += ", and starts and removes a pod sandbox of " + v.started
		}
		v.emit(finding.Condition(cond.Type, finding.StatusFalse, cond.Reason, msg))
	}
}

// probe makes the calls. The condition turns True only after
// failureThreshold failures in a row, so that one slow answer does not
// flap it; nothing is said in between.
func (p *prober) probe(ctx context.Context) ([]finding.Finding, error) {
	f := p.ask(ctx)
	if f == nil {
		p.failures.Reset()
	} else if !p.failures.Fail(p.c.cfg.FailureThreshold) {
		return nil, nil
	}
	p.verdict.setCalls(f)
	return nil, nil
}

// ask makes the three calls, each with the timeout, and returns the first
// failure, or nil.
func (p *prober) ask(ctx context.Context) *failure {
	c := p.c
	if path := c.socketPath(); !strings.Contains(path, "://") {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return &failure{"SocketMissing", fmt.Sprintf("the runtime's socket %s does not exist", path)}
		}
	}
	timeout := c.cfg.Timeout.Duration
	if err := c.call(ctx, "Version", timeout, func(ctx context.Context) error {
		_, err := p.runtime.Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
		return err
	}); err != nil {
		return c.classify("Version", err)
	}
	var st *runtimeapi.RuntimeStatus
	if err := c.call(ctx, "Status", timeout, func(ctx context.Context) error {
		resp, err := p.runtime.Status(ctx, &runtimeapi.StatusRequest{})
		st = resp.GetStatus()
		return err
	}); err != nil {
		return c.classify("Status", err)
	}
	ready := false
	for _, cond := range st.GetConditions() {
		switch {
		case cond.Type == runtimeapi.RuntimeReady && !cond.Status:
			return &failure{"RuntimeNotReady", fmt.Sprintf("%s reports RuntimeReady=false: %s %s", c.cfg.Endpoint, cond.Reason, cond.Message)}
		case cond.Type == runtimeapi.NetworkReady && !cond.Status && (c.cfg.RequireNetworkReady == nil || *c.cfg.RequireNetworkReady):
			return &failure{"NetworkNotReady", fmt.Sprintf("%s reports NetworkReady=false: %s %s", c.cfg.Endpoint, cond.Reason, cond.Message)}
		case cond.Type == runtimeapi.RuntimeReady:
			ready = true
		}
	}
	if !ready {
		// A runtime that does not say it is ready is not taken for one,
		// as the kubelet does not take it.
		return &failure{"RuntimeError", fmt.Sprintf("CRI Status on %s failed: it reports no RuntimeReady condition", c.cfg.Endpoint)}
	}
	// Only the probe's own sandboxes (normally none): the call goes
	// through the runtime's whole sandbox store as the kubelet's relist
	// does, but the answer is not the node's every pod, decoded and
	// thrown away every period.
	if err := c.call(ctx, "ListPodSandbox", timeout, func(ctx context.Context) error {
		_, err := p.runtime.ListPodSandbox(ctx, probeSandboxesRequest())
		return err
	}); err != nil {
		return c.classify("ListPodSandbox", err)
	}
	return nil
}

// call makes one CRI call with its own deadline and records its latency.
func (c *Check) call(ctx context.Context, method string, deadline time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	start := time.Now()
	err := fn(ctx)
	c.latency.WithLabelValues(method, result(err)).Observe(time.Since(start).Seconds())
	return err
}

// callReasons are the calls' probe's reasons for a call's result.
var callReasons = map[string]string{"timeout": "Timeout", "unavailable": "Unreachable", "error": "RuntimeError"}

// classify makes a failed call the calls' probe's failure.
func (c *Check) classify(method string, err error) *failure {
	reason := callReasons[result(err)]
	// The message stays the same from one failed probe to the next, so
	// that a lasting failure costs no status writes; the latency is in the
	// histogram.
	if reason == "Timeout" {
		return &failure{reason, fmt.Sprintf("CRI %s on %s did not answer within %s", method, c.cfg.Endpoint, c.cfg.Timeout.Duration)}
	}
	return &failure{reason, fmt.Sprintf("CRI %s on %s failed: %v", method, c.cfg.Endpoint, status.Convert(err).Message())}
}

// result is a call's result for the latency histogram: ok, timeout,
// unavailable or error.
func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case timedOut(err):
		return "timeout"
	case status.Code(err) == codes.Unavailable:
		return "unavailable"
	default:
		return "error"
	}
}

// timedOut says whether a call's error is its deadline passing.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}
