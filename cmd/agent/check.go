package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	result, err := agent.CheckOnce(ctx, cfg, all.Registry, wait)
	if err != nil {
		return false, err
	}
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
