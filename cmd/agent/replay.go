package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/config"
)

// newReplayCmd runs the kernel log rules over files and prints findings as
// JSON lines: how users test rules, and how the corpus tests run. With
// --expect it judges the files against expectations instead.
func newReplayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replay [flags] FILE...",
		Short: "Run the kernel log rules over log files (- for stdin)",
		Long: `Run the kernel log rules (the built-in ones, the config's and --npd-rules')
over log files, - for standard input: /dev/kmsg records, dmesg output or
plain lines. It prints one JSON line per finding.

With --expect it judges the logs against expectations instead (a corpus's
expect.json; with no FILE, every log the file names, beside it), printing
"ok" or "FAIL" and why for each.

Exit code: 0, 1 when a log failed its expectations, 2 on bad input.`,
		Example: `  nodeguard replay --config nodeguard.yaml sample.log
  dmesg | nodeguard replay -
  nodeguard replay --config nodeguard.yaml --expect rules-test/expect.json`,
		Args: cobra.ArbitraryArgs,
	}
	fs := cmd.Flags()
	configPath := fs.String("config", "", "YAML config file whose kmsg rules to use")
	npdRules := fs.StringArray("npd-rules", nil, "node-problem-detector log monitor file whose rules to add; may repeat")
	expect := fs.StringArray("expect", nil, "expectations file (a corpus's expect.json) to judge the logs by, instead of printing findings; may repeat, later files adding to earlier ones")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml") // fails only for an undefined flag
	_ = cmd.MarkFlagFilename("npd-rules", "json")
	_ = cmd.MarkFlagFilename("expect", "json")
	cmd.RunE = func(cmd *cobra.Command, files []string) error {
		if len(files) == 0 && len(*expect) == 0 {
			return errors.New("replay: name one or more files, or - for standard input")
		}
		cfg, err := config.Load(*configPath, all.Registry)
		if err != nil {
			return err
		}
		if len(*expect) == 0 {
			return agent.Replay(cfg, *npdRules, files, cmd.InOrStdin(), cmd.OutOrStdout())
		}
		failed, err := agent.ReplayExpect(cfg, *npdRules, *expect, files, cmd.OutOrStdout(), cmd.ErrOrStderr())
		if err == nil && failed > 0 {
			return exitCode(1)
		}
		return err
	}
	return cmd
}
