// Package cri asks the container runtime, over CRI on its socket, whether it
// answers and is ready: a hung containerd leaves the node Ready while no pod
// can start or stop.
package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
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
}

// DefaultConfig: containerd's socket; three misses in a row at 10 s apart is
// 30 s of a runtime that does not answer in 5 s, well past a busy runtime's
// slow moments and well before the kubelet's PLEG gives up (3 min).
func DefaultConfig() *Config {
	return &Config{
		Endpoint: "unix:///run/containerd/containerd.sock",
		ProbeSettings: checks.ProbeSettings{
			Period:           finding.Duration{Duration: 10 * time.Second},
			Timeout:          finding.Duration{Duration: 5 * time.Second},
			FailureThreshold: 3,
		},
	}
}

// Validate checks the settings.
func (c *Config) Validate() error {
	if c.Endpoint == "" {
		return &finding.FieldError{Field: "endpoint", Value: "", Reason: "needs the runtime's CRI socket"}
	}
	return c.ProbeSettings.Validate()
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
	client   internalapi.RuntimeService
	failures checks.InARow
}

// Run probes every period until ctx ends.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	p := &prober{c: c}
	defer p.close()
	return checks.RunLogged(ctx, c.log, "CRI probe", c.cfg.Period.Duration, 3*c.cfg.Timeout.Duration+time.Second, p.probe, emit)
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

func (p *prober) probe(ctx context.Context) ([]finding.Finding, error) {
	var reason, problem string
	if f := p.ask(ctx); f != nil {
		reason, problem = f.reason, f.message
	}
	return p.failures.Judge(p.c.cfg.FailureThreshold, finding.ContainerRuntimeUnresponsive,
		fmt.Sprintf("%s answers CRI Version, Status and ListPodSandbox", p.c.cfg.Endpoint), reason, problem), nil
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

func (c *Check) classify(method string, err error, took time.Duration) *failure {
	result, reason := "error", "RuntimeError"
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		result, reason = "timeout", "Timeout"
	} else if status.Code(err) == codes.Unavailable {
		result, reason = "unavailable", "Unreachable"
	}
	c.latency.WithLabelValues(method, result).Observe(took.Seconds())
	// The message stays the same from one failed probe to the next, so
	// that a lasting failure costs no status writes; the latency is in the
	// histogram.
	if reason == "Timeout" {
		return &failure{reason, fmt.Sprintf("CRI %s on %s did not answer within %s", method, c.cfg.Endpoint, c.cfg.Timeout.Duration)}
	}
	return &failure{reason, fmt.Sprintf("CRI %s on %s failed: %v", method, c.cfg.Endpoint, status.Convert(err).Message())}
}
