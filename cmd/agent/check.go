package main

import (
	"context"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
)

// newCheckCmd runs the enabled checks on this machine for a moment, with no
// cluster, and prints their conditions and the kernel's findings since
// boot. A True condition exits 1; an error exits 2.
func newCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check [flags]",
		Short: "Run every enabled check once, print the findings, exit 1 on a problem",
		Long: `Run the enabled checks on this machine for --wait, with no cluster, and print
their conditions as "kubectl describe node" does, then every kernel finding
since boot. It takes the agent's flags and config file.

Exit code: 0 when no condition is True, 1 when one is, 2 on an error.`,
		Args: cobra.NoArgs,
	}
	opts := addAgentFlags(cmd)
	wait := cmd.Flags().Duration("wait", 3*time.Second, "how long the checks get to report")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := opts.load()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		result, err := agent.CheckOnce(ctx, cfg, all.Registry, *wait)
		if err != nil {
			return err
		}
		if cfg.Output == "json" {
			err = result.WriteJSON(cmd.OutOrStdout())
		} else {
			err = result.WriteText(cmd.OutOrStdout())
		}
		if err != nil {
			return fmt.Errorf("writing the result: %w", err)
		}
		if result.Problem() {
			return exitCode(1)
		}
		return nil
	}
	return cmd
}
