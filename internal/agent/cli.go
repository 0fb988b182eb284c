package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/reporter"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Connect makes the API clients cfg asks for, or none (nil) when the
// agent runs standalone: asked to, or finding no cluster config. It sets
// cfg.Standalone to match, and a standalone agent without a node name takes
// the hostname.
func Connect(cfg *config.Config) (*kube.Clients, error) {
	rc, err := ClusterConfig(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Standalone = rc == nil
	if cfg.NodeName == "" {
		if !cfg.Standalone {
			return nil, errors.New("no node name: set --node-name, nodeName in the config, or $NODE_NAME")
		}
		cfg.NodeName, _ = os.Hostname()
	}
	if cfg.Standalone {
		return nil, nil
	}
	clients, err := kube.NewClients(rc)
	if err != nil {
		return nil, fmt.Errorf("making the API client: %w", err)
	}
	return &clients, nil
}

// ClusterConfig returns the API client config: cfg's kubeconfig, else
// $KUBECONFIG, else the in-cluster config; nil for standalone or when none
// is found.
func ClusterConfig(cfg *config.Config) (*rest.Config, error) {
	if cfg.Standalone {
		return nil, nil
	}
	path := cfg.Kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	var (
		rc  *rest.Config
		err error
	)
	if path != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig %s: %w", path, err)
		}
	} else {
		rc, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("loading the in-cluster config: %w", err)
		}
	}
	kube.ForAgent(rc, float32(cfg.Reporter.ClientQPS), cfg.Reporter.ClientBurst)
	return rc, nil
}

// Replay runs the kmsg check's rules (cfg's, with npdRules added) over the
// named files, - for stdin, and prints findings as JSON lines: how users
// test rules, and how the corpus tests run.
func Replay(cfg *config.Config, npdRules, names []string, stdin io.Reader, stdout io.Writer) error {
	kcfg := cfg.CheckConfigs[kmsg.Name].(*kmsg.Config)
	kcfg.NPDRules = append(kcfg.NPDRules, npdRules...)
	out := reporter.NewWriterSink(stdout, "json")
	rules, err := kcfg.Compile()
	if err != nil {
		return err
	}
	for _, name := range names {
		// A fresh engine per file: a report does not run on into the next.
		engine := rules.Engine()
		var r io.Reader = stdin
		label := "stdin"
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			defer f.Close()
			r, label = f, name
		}
		if err := logrules.Replay(r, label, engine, out.Finding); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
	}
	return nil
}

// CheckOnce runs the enabled checks of reg on this machine for wait, with
// no cluster, and returns their conditions and the kernel's findings since
// boot: one look at this machine, every kernel record since boot, no state
// kept, nothing sent anywhere.
func CheckOnce(ctx context.Context, cfg *config.Config, reg checks.Registry, wait time.Duration) (reporter.Result, error) {
	if k, ok := cfg.CheckConfigs[kmsg.Name].(*kmsg.Config); ok {
		k.StartAtEnd = false
		k.BacklogLookback = finding.Duration{Duration: 100 * 365 * 24 * time.Hour}
	}
	log := zap.NewNop()
	env := checks.Env{Log: log, ProcPath: cfg.ProcPath, SysPath: cfg.SysPath, Metrics: prometheus.NewRegistry(), Now: time.Now}
	built, err := BuildChecks(cfg, reg, env)
	if err != nil {
		return reporter.Result{}, err
	}
	snap := reporter.NewSnapshot()
	rep := reporter.New(log, built.Owned, snap)
	rep.Start(reporter.NotProbed(built.Owned), time.Time{})
	for _, f := range built.Healthy(true) {
		f.Time = time.Now()
		rep.Report(f)
	}
	runCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	(&checks.Supervisor{Checks: built.Running, Emit: rep.Report, Log: log}).Run(runCtx, time.Second)
	if ctx.Err() != nil {
		return reporter.Result{}, errors.New("interrupted")
	}
	return snap.Result(), nil
}
