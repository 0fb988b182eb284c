// Command nodeguard is the node agent: it runs the checks and reports their
// findings to the API server, or prints them when run standalone.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"k8s.io/klog/v2"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/logging"
)

// shutdownGrace bounds shutdown after SIGTERM; the DaemonSet's grace period
// is longer.
const shutdownGrace = 4 * time.Second

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// execute runs the command line and returns the exit code: 0, what a
// command's exitCode says (check and replay's 1), or 2 for any error, which
// it prints as one line.
func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(doubleDash(root, args, stderr))
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	}
	fmt.Fprintln(stderr, "nodeguard:", err)
	return 2
}

// exitCode ends nodeguard with that code and prints nothing: the command
// has said why (check's conditions, replay's failed logs).
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// newRootCmd is nodeguard's command tree. A command is a file with its
// new...Cmd and one entry here.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "nodeguard",
		Short: "a node agent that turns node problems into NodeConditions and Events",
		Long: `nodeguard: a node agent that turns node problems into NodeConditions and Events.

With no command it runs the agent, as "nodeguard run" does: it reports to the
API server, or runs standalone and prints its findings when it finds no
cluster (no --kubeconfig, $KUBECONFIG or in-cluster config).`,
		Example: `  # The agent, as the DaemonSet runs it:
  nodeguard --config=/etc/nodeguard/config.yaml
  # One look at this machine, no cluster needed; exit 1 on a problem:
  nodeguard check --config=/etc/nodeguard/config.yaml
  # Judge sample logs against their expectations, in CI:
  nodeguard replay --expect rules-test/expect.json
  # Shell completion for this bash session:
  source <(nodeguard completion bash)`,
		// main prints the error, as one line; a usage is asked for with -h.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	runAgent := agentCommand(root)
	showVersion := root.Flags().Bool("version", false, "print what \"nodeguard version\" prints")
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if *showVersion {
			currentBuild().print(cmd.OutOrStdout())
			return nil
		}
		return runAgent(cmd, args)
	}
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the agent (what nodeguard does with no command)",
		Args:  cobra.NoArgs,
	}
	run.RunE = agentCommand(run)
	root.AddCommand(run, newCheckCmd(), newReplayCmd(), newBundleCmd(), newVersionCmd())
	return root
}

// agentCommand gives cmd the agent's flags and returns what runs the agent
// with them.
func agentCommand(cmd *cobra.Command) func(*cobra.Command, []string) error {
	opts := addAgentFlags(cmd)
	return func(cmd *cobra.Command, _ []string) error {
		cfg, err := opts.load()
		if err != nil {
			return err
		}
		return run(cfg, cmd.OutOrStdout())
	}
}

// options are the command line's settings, applied over the config file.
type options struct {
	flags      *pflag.FlagSet
	configPath string
	nodeName   string
	kubeconfig string
	standalone bool
	keepPages  bool
	output     string
	listen     string
	logTo      string
	logFormat  string
	procPath   string
	sysPath    string
	stateDir   string
	npdRules   []string
	enable     map[string]*bool
	disable    map[string]*bool
}

// addAgentFlags registers the agent's flags on cmd, with their shell
// completions, for the commands that run checks.
func addAgentFlags(cmd *cobra.Command) *options {
	fs := cmd.Flags()
	fs.SortFlags = false // as declared: the config file first, the per-check switches last
	o := &options{flags: fs, enable: map[string]*bool{}, disable: map[string]*bool{}}
	fs.StringVar(&o.configPath, "config", "", "YAML config file")
	fs.StringVar(&o.nodeName, "node-name", "", "Node to report on (default $NODE_NAME, or the hostname when standalone)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; without it the in-cluster config is used, and without that the agent runs standalone")
	fs.BoolVar(&o.standalone, "standalone", false, "print findings and talk to no API server")
	fs.BoolVar(&o.keepPages, "keep-startup-pages", false, "keep the binary's start-up pages mapped instead of giving them back 30 s after start")
	fs.StringVar(&o.output, "output", "", "how findings are printed: text or json (default text)")
	fs.StringVar(&o.listen, "listen-address", "", "address for /metrics and /healthz (default :9102; \"off\" disables)")
	fs.StringVar(&o.logTo, "log-to", "", "where the agent's logs go: stderr or journald")
	fs.StringVar(&o.logFormat, "log-format", "", "stderr log format: json or console")
	fs.StringVar(&o.procPath, "proc-path", "", "the host's /proc")
	fs.StringVar(&o.sysPath, "sys-path", "", "the host's /sys")
	fs.StringVar(&o.stateDir, "state-dir", "", "directory for state kept across restarts")
	// An array, not a slice: a slice flag would split a path at its commas.
	fs.StringArrayVar(&o.npdRules, "npd-rules", nil, "node-problem-detector monitor file to run: a system log monitor (kernel-monitor.json), whose rules are added to the kernel log rules, or a custom plugin monitor (custom-plugin-monitor.json), whose plugins the plugins check runs; may repeat")
	for _, reg := range all.Registry {
		o.enable[reg.Name] = fs.Bool("check."+reg.Name, false, fmt.Sprintf("enable the %s check (default %v)", reg.Name, reg.DefaultEnabled))
		o.disable[reg.Name] = fs.Bool("no-check."+reg.Name, false, "disable the "+reg.Name+" check")
	}
	// These fail only for a flag not defined above.
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	_ = cmd.MarkFlagFilename("npd-rules", "json")
	_ = cmd.MarkFlagFilename("kubeconfig")
	for _, dir := range []string{"proc-path", "sys-path", "state-dir"} {
		_ = cmd.MarkFlagDirname(dir)
	}
	completeValues(cmd, "output", config.Outputs)
	completeValues(cmd, "log-to", config.LogTargets)
	completeValues(cmd, "log-format", config.LogFormats)
	return o
}

// completeValues completes flag with one of values.
func completeValues(cmd *cobra.Command, flag string, values []string) {
	_ = cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
}

// load reads the config file and lays the flags that were given over it.
func (o *options) load() (*config.Config, error) {
	cfg, err := config.Load(o.configPath, all.Registry)
	if err != nil {
		return nil, err
	}
	set := o.flags.Changed
	strFlags := map[string]struct {
		from string
		to   *string
	}{
		"node-name": {o.nodeName, &cfg.NodeName}, "kubeconfig": {o.kubeconfig, &cfg.Kubeconfig},
		"output": {o.output, &cfg.Output}, "listen-address": {o.listen, &cfg.ListenAddress},
		"log-to": {o.logTo, &cfg.LogTo}, "log-format": {o.logFormat, &cfg.LogFormat},
		"proc-path": {o.procPath, &cfg.ProcPath}, "sys-path": {o.sysPath, &cfg.SysPath}, "state-dir": {o.stateDir, &cfg.StateDir},
	}
	for name, f := range strFlags {
		if set(name) {
			*f.to = f.from
		}
	}
	if set("standalone") {
		cfg.Standalone = o.standalone
	}
	if set("keep-startup-pages") {
		cfg.KeepStartupPages = o.keepPages
	}
	if cfg.ListenAddress == "off" {
		cfg.ListenAddress = ""
	}
	for _, reg := range all.Registry {
		if set("check." + reg.Name) {
			cfg.Enabled[reg.Name] = *o.enable[reg.Name]
		}
		if set("no-check."+reg.Name) && *o.disable[reg.Name] {
			cfg.Enabled[reg.Name] = false
		}
	}
	if err := agent.AddNPDFiles(cfg, o.npdRules); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NodeName == "" {
		cfg.NodeName = os.Getenv("NODE_NAME")
	}
	return cfg, nil
}

// run runs the agent until SIGTERM or SIGINT; standalone, it prints
// findings on out.
func run(cfg *config.Config, out io.Writer) error {
	log, err := logging.New(cfg.LogTo, cfg.LogFormat)
	if err != nil {
		return err
	}
	defer log.Sync()
	// client-go logs through klog; send it to the same place.
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	agent.ApplyCgroupMemoryLimit(log)

	clients, err := agent.Connect(cfg)
	if err != nil {
		return err
	}
	log = log.With(zap.String("node", cfg.NodeName))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), currentBuild().collector())
	deps := agent.Deps{Log: log, Metrics: reg, Clients: clients, Out: out, BootTime: agent.BootTime(cfg.ProcPath)}
	a, err := agent.Build(cfg, all.Registry, deps)
	if err != nil {
		return err
	}
	return a.Run(ctx, shutdownGrace)
}
