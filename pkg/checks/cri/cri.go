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
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/nodeguard/nodeguard/pkg/checks"
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
	client   internalapi.RuntimeService
	failures checks.InARow
}

// Run probes every period, and starts a sandbox every sandboxPeriod in a
// loop of its own (a sandbox may take its time; the calls that say whether
// the runtime answers must not wait for it), until ctx ends.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	v := &verdict{emit: emit, endpoint: c.cfg.Endpoint}
	var wg sync.WaitGroup
	if c.cfg.SandboxPeriod.Duration > 0 {
		s := &sandboxProber{c: c, verdict: v}
		wg.Go(func() { s.run(ctx) })
	}
	p := &prober{c: c, verdict: v}
	defer p.close()
	err := checks.RunLogged(ctx, c.log, "CRI probe", c.cfg.Period.Duration, 3*c.cfg.Timeout.Duration+time.Second, p.probe, emit)
	wg.Wait()
	return err
}

func (p *prober) close() {
	if p.client != nil {
		p.client.Close(context.Background())
		p.client = nil
	}
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

// ask makes the three calls and returns the first failure, or nil.
func (p *prober) ask(ctx context.Context) *failure {
	c := p.c
	if path := c.socketPath(); !strings.Contains(path, "://") {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			p.close()
			return &failure{"SocketMissing", fmt.Sprintf("the runtime's socket %s does not exist", path)}
		}
	}
	start := time.Now()
	if p.client == nil {
		client, err := criclient.NewRemoteRuntimeServiceBuilder().
			WithEndpoint(c.cfg.Endpoint).
			WithConnectionTimeout(c.cfg.Timeout.Duration).
			WithTracerProvider(trace.TracerProvider(nil)).
			Build(ctx)
		if err != nil {
			return c.classify("Version", err, time.Since(start))
		}
		p.client = client
	}
	t := time.Now()
	_, err := p.client.Version(ctx, "v1")
	if f := c.observe("Version", err, t); f != nil {
		return f
	}
	t = time.Now()
	st, err := p.client.Status(ctx, false)
	if f := c.observe("Status", err, t); f != nil {
		return f
	}
	for _, cond := range st.GetStatus().GetConditions() {
		switch {
		case cond.Type == runtimeapi.RuntimeReady && !cond.Status:
			return &failure{"RuntimeNotReady", fmt.Sprintf("%s reports RuntimeReady=false: %s %s", c.cfg.Endpoint, cond.Reason, cond.Message)}
		case cond.Type == runtimeapi.NetworkReady && !cond.Status && (c.cfg.RequireNetworkReady == nil || *c.cfg.RequireNetworkReady):
			return &failure{"NetworkNotReady", fmt.Sprintf("%s reports NetworkReady=false: %s %s", c.cfg.Endpoint, cond.Reason, cond.Message)}
		}
	}
	t = time.Now()
	_, err = p.client.ListPodSandbox(ctx, nil)
	return c.observe("ListPodSandbox", err, t)
}

func (c *Check) observe(method string, err error, start time.Time) *failure {
	took := time.Since(start)
	if err == nil {
		c.latency.WithLabelValues(method, "ok").Observe(took.Seconds())
		return nil
	}
	return c.classify(method, err, took)
}

// callReasons are the calls' probe's reasons for a call's result.
var callReasons = map[string]string{"timeout": "Timeout", "unavailable": "Unreachable", "error": "RuntimeError"}

func (c *Check) classify(method string, err error, took time.Duration) *failure {
	reason := callReasons[c.record(method, err, took)]
	// The message stays the same from one failed probe to the next, so
	// that a lasting failure costs no status writes; the latency is in the
	// histogram.
	if reason == "Timeout" {
		return &failure{reason, fmt.Sprintf("CRI %s on %s did not answer within %s", method, c.cfg.Endpoint, c.cfg.Timeout.Duration)}
	}
	return &failure{reason, fmt.Sprintf("CRI %s on %s failed: %v", method, c.cfg.Endpoint, status.Convert(err).Message())}
}

// record puts one call in the latency histogram and returns its result:
// ok, timeout, unavailable or error.
func (c *Check) record(method string, err error, took time.Duration) string {
	result := "ok"
	switch {
	case err == nil:
	case timedOut(err):
		result = "timeout"
	case status.Code(err) == codes.Unavailable:
		result = "unavailable"
	default:
		result = "error"
	}
	c.latency.WithLabelValues(method, result).Observe(took.Seconds())
	return result
}

// timedOut says whether a call's error is its deadline passing.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}
