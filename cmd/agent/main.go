// Command nodeguard is the node agent: it runs the checks and reports their
// findings to the API server, or prints them when run standalone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	args := os.Args[1:]
	var err error
	switch {
	case len(args) > 0 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version"):
		currentBuild().print(os.Stdout)
		return
	case len(args) > 0 && args[0] == "help":
		err = run([]string{"-h"})
	case len(args) > 0 && args[0] == "replay":
		var failed bool
		failed, err = replay(args[1:], os.Stdin, os.Stdout, os.Stderr)
		if err == nil && failed {
			os.Exit(1)
		}
	case len(args) > 0 && args[0] == "check":
		var problem bool
		problem, err = checkOnce(args[1:], os.Stdout)
		if err == nil && problem {
			os.Exit(1)
		}
	default:
		err = run(args)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // asked for, and printed
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodeguard:", err)
		os.Exit(2)
	}
}

// options are the command line's settings, applied over the config file.
type options struct {
	fs         *flag.FlagSet
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

func parseFlags(args []string) (*options, error) {
	return parseFlagsAs("nodeguard", args, nil)
}

// parseFlagsAs parses the agent's flags, and a subcommand's own when extra
// registers them.
func parseFlagsAs(name string, args []string, extra func(*flag.FlagSet)) (*options, error) {
	o := &options{fs: flag.NewFlagSet(name, flag.ContinueOnError), enable: map[string]*bool{}, disable: map[string]*bool{}}
	fs := o.fs
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
	fs.Func("npd-rules", "node-problem-detector monitor file to run: a system log monitor (kernel-monitor.json), whose rules are added to the kernel log rules, or a custom plugin monitor (custom-plugin-monitor.json), whose plugins the plugins check runs; may repeat", func(s string) error {
		o.npdRules = append(o.npdRules, s)
		return nil
	})
	if extra != nil {
		extra(fs)
	}
	for _, reg := range all.Registry {
		o.enable[reg.Name] = fs.Bool("check."+reg.Name, false, fmt.Sprintf("enable the %s check (default %v)", reg.Name, reg.DefaultEnabled))
		o.disable[reg.Name] = fs.Bool("no-check."+reg.Name, false, "disable the "+reg.Name+" check")
	}
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

// parse parses args, printing the usage only when asked with -h: a bad flag
// is then one line on stderr, which main prints, not that line and the usage.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		// Asked for: on stdout, as kubectl and helm print theirs.
		fs.SetOutput(os.Stdout)
		if fs.Name() == "nodeguard" {
			fmt.Fprint(os.Stdout, usage)
		} else {
			fmt.Fprintf(os.Stdout, "Usage of %s:\n", fs.Name())
		}
		fs.PrintDefaults()
	}
	return err
}

// load reads the config file and lays the flags that were given over it.
func (o *options) load() (*config.Config, error) {
	cfg, err := config.Load(o.configPath, all.Registry)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	o.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
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
		if set[name] {
			*f.to = f.from
		}
	}
	if set["standalone"] {
		cfg.Standalone = o.standalone
	}
	if set["keep-startup-pages"] {
		cfg.KeepStartupPages = o.keepPages
	}
	if cfg.ListenAddress == "off" {
		cfg.ListenAddress = ""
	}
	for _, reg := range all.Registry {
		if set["check."+reg.Name] {
			cfg.Enabled[reg.Name] = *o.enable[reg.Name]
		}
		if set["no-check."+reg.Name] && *o.disable[reg.Name] {
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

func newLogger(cfg *config.Config) (*zap.Logger, error) {
	return logging.New(cfg.LogTo, cfg.LogFormat)
}

func run(args []string) error {
	opts, err := parseFlags(args)
	if err != nil {
		return err
	}
	cfg, err := opts.load()
	if err != nil {
		return err
	}
	log, err := newLogger(cfg)
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
	deps := agent.Deps{Log: log, Metrics: reg, Clients: clients, Out: os.Stdout, BootTime: agent.BootTime(cfg.ProcPath)}
	a, err := agent.Build(cfg, all.Registry, deps)
	if err != nil {
		return err
	}
	return a.Run(ctx, shutdownGrace)
}

// replay runs the kernel log rules over files and prints findings as JSON
// lines: how users test rules, and how the corpus tests run. With --expect
// it judges the files against expectations instead, and failed says that
// one did not pass.
func replay(args []string, stdin io.Reader, stdout, stderr io.Writer) (failed bool, err error) {
	fs := flag.NewFlagSet("nodeguard replay", flag.ContinueOnError)
	configPath := fs.String("config", "", "YAML config file whose kmsg rules to use")
	var npdRules, expect []string
	fs.Func("npd-rules", "node-problem-detector log monitor file whose rules to add; may repeat", func(s string) error {
		npdRules = append(npdRules, s)
		return nil
	})
	fs.Func("expect", "expectations file (a corpus's expect.json) to judge the logs by, instead of printing findings; may repeat, later files adding to earlier ones", func(s string) error {
		expect = append(expect, s)
		return nil
	})
	if err := parse(fs, args); err != nil {
		return false, err
	}
	if fs.NArg() == 0 && len(expect) == 0 {
		return false, errors.New("replay: name one or more files, or - for standard input")
	}
	cfg, err := config.Load(*configPath, all.Registry)
	if err != nil {
		return false, err
	}
	if len(expect) > 0 {
		n, err := agent.ReplayExpect(cfg, npdRules, expect, fs.Args(), stdout, stderr)
		return n > 0, err
	}
	return false, agent.Replay(cfg, npdRules, fs.Args(), stdin, stdout)
}
