// Package dns resolves a cluster name through the cluster DNS service from
// the node, so that a node whose pods cannot resolve anything (a partition
// from CoreDNS, a broken kube-proxy rule) says so.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "dns"

// Config is the check's section of the config file.
type Config struct {
	// Name is resolved through the cluster DNS.
	Name string `json:"name,omitempty"`
	// Server is the cluster DNS address (host or host:port); empty reads
	// clusterDNS from the kubelet's config file.
	Server string `json:"server,omitempty"`
	// KubeletConfig is the kubelet's config file, for clusterDNS.
	KubeletConfig string `json:"kubeletConfig,omitempty"`
	checks.ProbeSettings
}

// DefaultConfig resolves the API server's service name, which every cluster
// DNS serves.
func DefaultConfig() *Config {
	return &Config{
		Name:          "kubernetes.default.svc.cluster.local",
		KubeletConfig: "/var/lib/kubelet/config.yaml",
		ProbeSettings: checks.ProbeSettings{
			Period:           finding.Duration{Duration: 10 * time.Second},
			Timeout:          finding.Duration{Duration: 2 * time.Second},
			FailureThreshold: 3,
		},
	}
}

// Validate checks the settings.
func (c *Config) Validate() error {
	if c.Name == "" {
		return &finding.FieldError{Field: "name", Value: "", Reason: "needs a name to resolve"}
	}
	return c.ProbeSettings.Validate()
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return &Check{cfg: cfg, log: env.Log}, nil
})

// Check resolves the name.
type Check struct {
	cfg *Config
	log *zap.Logger
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.ClusterDNSUnreachable}
}

// Run resolves every period until ctx ends.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	var failures checks.InARow
	return checks.RunLogged(ctx, c.log, "DNS probe", c.cfg.Period.Duration, c.cfg.Timeout.Duration+time.Second,
		func(ctx context.Context) ([]finding.Finding, error) {
			server, err := c.server()
			if err != nil {
				return nil, err
			}
			return failures.Judge(c.cfg.FailureThreshold, finding.ClusterDNSUnreachable,
				fmt.Sprintf("%s resolves %s", server, c.cfg.Name), "ClusterDNSUnreachable", c.resolve(ctx, server)), nil
		},
		emit)
}

// server returns the DNS address to ask, host:port.
func (c *Check) server() (string, error) {
	s := c.cfg.Server
	if s == "" {
		b, err := os.ReadFile(c.cfg.KubeletConfig)
		if errors.Is(err, os.ErrNotExist) {
			return "", checks.ErrNoData // no kubelet here: nothing to ask
		}
		if err != nil {
			return "", fmt.Errorf("reading kubelet config %s: %w", c.cfg.KubeletConfig, err)
		}
		var kc struct {
			ClusterDNS []string `json:"clusterDNS"`
		}
		if err := yaml.Unmarshal(b, &kc); err != nil {
			return "", fmt.Errorf("reading clusterDNS from %s: %w", c.cfg.KubeletConfig, err)
		}
		if len(kc.ClusterDNS) == 0 {
			return "", checks.ErrNoData
		}
		s = kc.ClusterDNS[0]
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		s = net.JoinHostPort(s, "53")
	}
	return s, nil
}

// resolve asks server for the name over UDP and says what went wrong, or "".
func (c *Check) resolve(ctx context.Context, server string) string {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", server)
	}}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout.Duration)
	defer cancel()
	addrs, err := r.LookupHost(ctx, c.cfg.Name)
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(addrs) > 0:
		return ""
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("%s answers that %s does not exist", server, c.cfg.Name)
	case errors.As(err, &dnsErr) && dnsErr.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%s did not answer for %s within %s", server, c.cfg.Name, c.cfg.Timeout.Duration)
	case err != nil:
		return fmt.Sprintf("resolving %s through %s failed: %s", c.cfg.Name, server, lookupFailure(err))
	}
	return fmt.Sprintf("%s gave no address for %s", server, c.cfg.Name)
}

// lookupFailure is the cause of a failed lookup, without what changes from
// one try to the next. Go's error names the local port of each query and,
// with a custom dialer, the resolv.conf server rather than the one asked
// ("lookup x on 10.0.0.2:53: read udp 10.1.2.3:41234->10.96.0.10:53: read:
// connection refused"); as a condition's message it would make a status
// write on every probe while the failure lasts, on every node at once. The
// last part ("connection refused", "server misbehaving") is what matters.
func lookupFailure(err error) string {
	text := err.Error()
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		text = dnsErr.Err
	}
	if i := strings.LastIndex(text, ": "); i >= 0 {
		text = text[i+2:]
	}
	return text
}
