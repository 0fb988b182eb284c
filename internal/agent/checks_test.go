package agent

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// logCheck logs one line through the logger its Env gave it.
type logCheck struct {
	name  string
	log   *zap.Logger
	conds []finding.ConditionDefault
}

func (c *logCheck) Name() string                                     { return c.name }
func (c *logCheck) Conditions() []finding.ConditionDefault           { return c.conds }
func (c *logCheck) Run(context.Context, func(finding.Finding)) error { return nil }

func TestBuildChecksNamesEachCheckInItsLogAndListsTypesOnce(t *testing.T) {
	type cfg struct{}
	reg := checks.Registry{}
	for _, name := range []string{"alpha", "beta", "off"} {
		reg = append(reg, checks.Define(name, name != "off", func() *cfg { return &cfg{} }, func(_ *cfg, env checks.Env) (checks.Check, error) {
			env.Log.Info("built")
			// Both own DiskIOStuck, from the catalog.
			return &logCheck{name: name, log: env.Log, conds: []finding.ConditionDefault{finding.DiskIOStuck}}, nil
		}))
	}
	c, err := config.Load("", reg)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	built, err := BuildChecks(c, reg, checks.Env{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	for _, e := range logs.All() {
		named = append(named, e.ContextMap()["check"].(string))
	}
	if len(named) != 2 || named[0] != "alpha" || named[1] != "beta" {
		t.Errorf("the checks logged with check=%v, want alpha and beta (off is disabled)", named)
	}
	var types []string
	for _, d := range built.Owned {
		types = append(types, d.Type)
	}
	if len(types) != 2 || types[0] != finding.CheckStuck.Type || types[1] != finding.DiskIOStuck.Type {
		t.Errorf("Owned = %v, want the supervisor's type and DiskIOStuck once", types)
	}
	if h := built.Healthy(false); len(h) != 2 || h[0].Check != "alpha" || h[0].Status != finding.StatusFalse {
		t.Errorf("Healthy(false) = %+v, want each probing check's healthy default, named", h)
	}
}
