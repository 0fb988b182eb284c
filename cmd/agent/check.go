package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// checkOnce runs the enabled checks on this machine for a moment, with no
// cluster, and prints their conditions and the kernel's findings since
// boot. It reports whether a condition is True (exit 1); an error exits 2.
func checkOnce(args []string, stdout io.Writer) (bool, error) {
	wait := 3 * time.Second
	opts, err := parseFlagsAs("nodeguard check", args, func(fs *flag.FlagSet) {
		fs.DurationVar(&wait, "wait", wait, "how long the checks get to report")
	})
	if err != nil {
		return false, err
	}
	cfg, err := opts.load()
	if err != nil {
		return false, err
	}
	// One look at this machine: every kernel record since boot, no state
	// kept, nothing sent anywhere.
	if k, ok := cfg.CheckConfigs[kmsg.Name].(*kmsg.Config); ok {
		k.StartAtEnd = false
		k.BacklogLookback = finding.Duration{Duration: 100 * 365 * 24 * time.Hour}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := zap.NewNop()
	env := checks.Env{Log: log, ProcPath: cfg.ProcPath, SysPath: cfg.SysPath, Metrics: prometheus.NewRegistry(), Now: time.Now}
	built, err := agent.BuildChecks(cfg, all.Registry, env)
	if err != nil {
		return false, err
	}
	running, owned := built.Running, built.Owned
	snap := reporter.NewSnapshot()
	rep := reporter.New(log, owned, snap)
	rep.Start(reporter.NotProbed(owned), time.Time{})
	for _, f := range built.Healthy(true) {
		f.Time = time.Now()
		rep.Report(f)
	}
	runCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	(&checks.Supervisor{Checks: running, Emit: rep.Report, Log: log}).Run(runCtx, time.Second)
	if ctx.Err() != nil {
		return false, errors.New("interrupted")
	}
	result := snap.Result()
	if cfg.Output == "json" {
		err = result.WriteJSON(stdout)
	} else {
		err = result.WriteText(stdout)
	}
	if err != nil {
		return false, fmt.Errorf("writing the result: %w", err)
	}
	return result.Problem(), nil
}
