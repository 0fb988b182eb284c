package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	rules, err := replayRules(cfg, npdRules)
	if err != nil {
		return err
	}
	out := reporter.NewWriterSink(stdout, "json")
	for _, name := range names {
		if err := replayFile(rules, name, stdin, out.Finding); err != nil {
			return err
		}
	}
	return nil
}

// ReplayExpect judges each log, replayed as Replay does, against its entry
// (by file name) in the expectations files, merged in order, and prints one
// line per log, "ok   LOG" or "FAIL LOG: why; why", and a closing
// "N passed, N failed", as the corpus tools do; a failed log's findings go
// to stderr, for whoever must fix it. With no logs named it judges every
// entry's file, beside the first expectations file. It returns how many
// failed; an error is bad input (a bad expectations file, a missing log).
func ReplayExpect(cfg *config.Config, npdRules, expectPaths, logs []string, stdout, stderr io.Writer) (failed int, err error) {
	if len(expectPaths) == 0 {
		return 0, errors.New("replay: no expectations file")
	}
	expect := logrules.Expectations{}
	for _, p := range expectPaths {
		more, err := logrules.LoadExpectations(p)
		if err != nil {
			return 0, err
		}
		expect.Merge(more)
	}
	if len(logs) == 0 {
		dir := filepath.Dir(expectPaths[0])
		for _, name := range expect.Names() {
			path := filepath.Join(dir, name)
			if _, err := os.Stat(path); err != nil {
				return 0, &logrules.ExpectError{File: expectPaths[0], Entry: name, Err: fmt.Errorf("no log to judge: %w", err)}
			}
			logs = append(logs, path)
		}
	}
	rules, err := replayRules(cfg, npdRules)
	if err != nil {
		return 0, err
	}
	passed := 0
	for _, log := range logs {
		if log == "-" {
			return 0, errors.New("replay: --expect judges files by name; standard input has none")
		}
		var found []finding.Finding
		if err := replayFile(rules, log, nil, func(f finding.Finding) { found = append(found, f) }); err != nil {
			return 0, err
		}
		var why []string
		if spec, ok := expect[filepath.Base(log)]; ok {
			why = logrules.Judge(spec, found)
		} else {
			why = []string{fmt.Sprintf("no entry %q in %s", filepath.Base(log), strings.Join(expectPaths, ", "))}
		}
		if len(why) == 0 {
			passed++
			fmt.Fprintf(stdout, "ok   %s\n", log)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAIL %s: %s\n", log, strings.Join(why, "; "))
		for _, f := range found {
			name := f.Reason
			if f.Kind == finding.KindCondition {
				name = f.Type + "=" + string(f.Status)
			}
			fmt.Fprintf(stderr, "  %s found %s: %s\n", f.Source, name, f.Message)
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	return failed, nil
}

// replayRules compiles the kmsg check's rules, with npdRules added, and
// returns what makes an engine over them as the check would.
func replayRules(cfg *config.Config, npdRules []string) (func() *logrules.Engine, error) {
	kcfg := cfg.CheckConfigs[kmsg.Name].(*kmsg.Config)
	kcfg.NPDRules = append(kcfg.NPDRules, npdRules...)
	rules, err := kcfg.Compile()
	if err != nil {
		return nil, err
	}
	return func() *logrules.Engine { return kcfg.Engine(rules) }, nil
}

// replayFile replays one log, - for stdin, through a fresh engine: a report
// does not run on into the next file.
func replayFile(engine func() *logrules.Engine, name string, stdin io.Reader, emit func(finding.Finding)) error {
	r, label := stdin, "stdin"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		defer f.Close()
		r, label = f, name
	}
	if err := logrules.Replay(r, label, engine(), emit); err != nil {
		return fmt.Errorf("replay: %w", err)
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
