package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
)

// newBundleCmd writes a support bundle; the logic is agent.WriteBundle's.
func newBundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle [-o FILE] [flags]",
		Short: "Write a tar.gz of the evidence captured and the node's state, for a support ticket",
		Long: `Write a tar.gz of the evidence directories captured under stateDir/evidence
when conditions turned True, and of this node's state now: what "nodeguard
check" prints, the effective config and the version. No cluster is needed. It
takes the agent's flags and config file, so that it finds the same stateDir.`,
		Example: `  # Inside the DaemonSet's pod, to a file on your machine:
  kubectl -n nodeguard exec POD -- /usr/bin/nodeguard bundle --config=/etc/nodeguard/config.yaml -o - > bundle.tar.gz`,
		Args: cobra.NoArgs,
	}
	opts := addAgentFlags(cmd)
	out := cmd.Flags().StringP("file", "o", "", "file to write the tar.gz to, - for standard output (default nodeguard-bundle-HOST-TIME.tar.gz)")
	wait := cmd.Flags().Duration("wait", 3*time.Second, "how long the checks get to report")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := opts.load()
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		var version bytes.Buffer
		currentBuild().print(&version)
		if *out == "-" {
			return agent.WriteBundle(ctx, cfg, all.Registry, version.String(), *wait, cmd.OutOrStdout())
		}
		path := *out
		if path == "" {
			host, _ := os.Hostname()
			path = fmt.Sprintf("nodeguard-bundle-%s-%s.tar.gz", host, time.Now().UTC().Format("20060102T150405Z"))
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		if err := agent.WriteBundle(ctx, cfg, all.Registry, version.String(), *wait, f); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", path)
		return nil
	}
	return cmd
}
