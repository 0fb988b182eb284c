// Package kubelet probes the kubelet's own health endpoint from the node.
package kubelet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "kubelet"

// Config is the check's section of the config file.
type Config struct {
	// HealthzURL is the kubelet's healthz endpoint (its --healthz-port).
	HealthzURL string `json:"healthzURL,omitempty"`
	checks.ProbeSettings
}

// DefaultConfig probes the kubelet's default healthz address.
func DefaultConfig() *Config {
	return &Config{
		HealthzURL: "http://127.0.0.1:10248/healthz",
		ProbeSettings: checks.ProbeSettings{
			Period:           finding.Duration{Duration: 10 * time.Second},
			Timeout:          finding.Duration{Duration: 5 * time.Second},
			FailureThreshold: 3,
		},
	}
}

// Validate checks the settings.
func (c *Config) Validate() error {
	if !strings.HasPrefix(c.HealthzURL, "http://") && !strings.HasPrefix(c.HealthzURL, "https://") {
		return &finding.FieldError{Field: "healthzURL", Value: c.HealthzURL, Reason: "must be an http:// or https:// URL"}
	}
	return c.ProbeSettings.Validate()
}

// Registration is the check's entry in the registry. It is off by default:
// on a machine without a kubelet a refused connection is no sick kubelet.
// The DaemonSet's config turns it on.
var Registration = checks.Define(Name, false, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return &Check{cfg: cfg, log: env.Log, client: &http.Client{Timeout: cfg.Timeout.Duration}}, nil
})

// Check probes healthz.
type Check struct {
	cfg    *Config
	log    *zap.Logger
	client *http.Client
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.KubeletUnhealthy}
}

// Run probes every period until ctx ends.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	var failures checks.InARow
	return checks.RunLogged(ctx, c.log, "kubelet healthz probe", c.cfg.Period.Duration, c.cfg.Timeout.Duration+time.Second,
		func(ctx context.Context) ([]finding.Finding, error) {
			return failures.Judge(c.cfg.FailureThreshold, finding.KubeletUnhealthy, finding.KubeletUnhealthy.Message, "KubeletUnhealthy", c.probe(ctx)), nil
		},
		emit)
}

func (c *Check) probe(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.HealthzURL, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if ctx.Err() != nil || strings.Contains(err.Error(), "Client.Timeout") {
			return fmt.Sprintf("%s did not answer within %s", c.cfg.HealthzURL, c.cfg.Timeout.Duration)
		}
		return fmt.Sprintf("%s: %v", c.cfg.HealthzURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s answered %s: %s", c.cfg.HealthzURL, resp.Status, strings.TrimSpace(string(body)))
	}
	return ""
}
