// Package agent assembles nodeguard from its configuration: the checks from
// the registry, the supervisor that runs them, and the reporter with its
// sinks. `nodeguard` run and check and hack/bench all build the agent here,
// so that what a benchmark measures and what `nodeguard check` shows is what
// the DaemonSet runs.
package agent

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// Checks are the enabled checks, built and not yet running.
type Checks struct {
	Running []checks.Check
	// Owned lists every condition type the checks and the supervisor own,
	// with their healthy defaults; a type two checks share is listed once
	// (every check takes a shared type's default from pkg/finding's
	// catalog, so which owner comes first does not matter).
	Owned []finding.ConditionDefault
}

// BuildChecks makes the enabled checks of reg from cfg. Each check gets env
// with a logger that names it (check=<name>), as node_exporter's collectors
// do, so that a reader of the agent's log knows which check spoke.
func BuildChecks(cfg *config.Config, reg checks.Registry, env checks.Env) (*Checks, error) {
	if env.Log == nil {
		env.Log = zap.NewNop()
	}
	out := &Checks{}
	owned := (&checks.Supervisor{}).Conditions()
	for _, r := range reg {
		if !cfg.Enabled[r.Name] {
			continue
		}
		cenv := env
		cenv.Log = env.Log.With(zap.String("check", r.Name))
		c, err := r.New(cfg.CheckConfigs[r.Name], cenv)
		if err != nil {
			return nil, fmt.Errorf("starting check %s: %w", r.Name, err)
		}
		out.Running = append(out.Running, c)
		owned = append(owned, c.Conditions()...)
	}
	out.Owned = reporter.UniqueDefaults(owned)
	return out, nil
}

// Healthy returns the healthy default of each condition of the log-driven
// checks (logDriven true: a log check that has said nothing has seen nothing
// wrong), or of the probing checks (false: what their first probe reports on
// a healthy node).
func (c *Checks) Healthy(logDriven bool) []finding.Finding {
	var out []finding.Finding
	for _, ch := range c.Running {
		if _, ok := ch.(checks.LogDriven); ok != logDriven {
			continue
		}
		for _, d := range ch.Conditions() {
			f := d.Healthy()
			f.Check = ch.Name()
			out = append(out, f)
		}
	}
	return out
}
