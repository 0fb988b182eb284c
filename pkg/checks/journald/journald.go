// Package journald is the service log check: it follows systemd units'
// journal entries (kubelet, containerd) and runs log rules over them.
package journald

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logsource"
)

// Name is the check's name in configuration and metrics.
const Name = "journald"

const sourcePrefix = "journald:"

// Config is the check's section of the config file.
type Config struct {
	// Dir is a directory of journal files to read instead of the system
	// journal.
	Dir string `json:"dir,omitempty"`
	// Rules are added to the built-in rules; each names its unit in source,
	// as "journald:kubelet.service". One with a built-in rule's name
	// replaces it.
	Rules        []logrules.Rule            `json:"rules,omitempty"`
	DisableRules []string                   `json:"disableRules,omitempty"`
	Conditions   []finding.ConditionDefault `json:"conditions,omitempty"`
	// FromStart reads the entries already in the journal at start.
	FromStart bool `json:"fromStart,omitempty"`
}

// DefaultConfig is the configuration a node gets without a config file.
func DefaultConfig() *Config { return &Config{} }

// DefaultRules are the built-in service log rules: the kubelet's own words
// when it cannot reach the API server or its pod lifecycle loop stalls.
// Its failures to renew its Lease are events, evidence of why, and never
// KubeletLeaseStale: the kubelet logs the same lines when the API server is
// down or the whole node is cut off, and a verdict from them would blame
// every kubelet of the fleet after a control-plane outage. The lease check
// owns that condition, and judges it only while the agent itself reaches
// the API server.
func DefaultRules() []logrules.Rule {
	kubelet := func(name, reason, contains, pattern string) logrules.Rule {
		return logrules.Rule{Name: name, Source: sourcePrefix + "kubelet.service", Kind: finding.KindEvent,
			Reason: reason, Contains: contains, Pattern: pattern}
	}
	return []logrules.Rule{
		kubelet("kubelet-lease-update-failed", "KubeletLeaseUpdateFailed", "to update", `[Ff]ailed to update (?:node )?lease`),
		kubelet("kubelet-node-status-failed", "KubeletNodeStatusUpdateFailed", "rror updating node status", `[Ee]rror updating node status`),
		kubelet("kubelet-closed-connection", "KubeletConnectionLost", "use of closed network connection", `use of closed network connection`),
		kubelet("kubelet-http2-connection-lost", "KubeletConnectionLost", "http2: client connection lost", `http2: client connection lost`),
		kubelet("kubelet-pleg-unhealthy", "PLEGUnhealthy", "PLEG is not healthy", `PLEG is not healthy`),
		{
			// The memcg/kmem leak's other face: the kubelet or runc cannot
			// make a pod's cgroup because the kernel has no memory for
			// another one.
			Name: "kubelet-cgroup-mkdir-enomem", Source: sourcePrefix + "kubelet.service", Kind: finding.KindCondition,
			Condition: finding.MemoryCgroupLeak.Type, Reason: "CgroupMkdirFailed", Contains: "cannot allocate memory",
			Pattern:    `mkdir \S*(?:cgroup|kubepods)\S*: cannot allocate memory`,
			ClearAfter: finding.Duration{Duration: time.Hour},
		},
	}
}

// DefaultConditions are the condition types the built-in rules set; the
// memcg check owns it too, and the reporter merges the sources.
func DefaultConditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.MemoryCgroupLeak}
}

// rulesByUnit merges the rules and splits them by the unit they read.
func (c *Config) rulesByUnit() (map[string][]logrules.Rule, error) {
	rules, err := logrules.Merge(DefaultRules(), c.Rules, c.DisableRules)
	if err != nil {
		return nil, &finding.FieldError{Field: "disableRules", Value: c.DisableRules, Reason: err.Error()}
	}
	byUnit := map[string][]logrules.Rule{}
	for _, r := range rules {
		unit, ok := strings.CutPrefix(r.Source, sourcePrefix)
		if !ok || unit == "" {
			field := "rules"
			for i, u := range c.Rules {
				if u.Name == r.Name {
					field = "rules[" + strconv.Itoa(i) + "].source"
				}
			}
			return nil, &finding.FieldError{Field: field, Value: r.Source, Reason: `a journald rule's source is "journald:UNIT", e.g. "journald:kubelet.service"`}
		}
		byUnit[unit] = append(byUnit[unit], r)
	}
	return byUnit, nil
}

// compile compiles each unit's rules, once per start: Validate to report a
// bad rule, New for the check to keep.
func (c *Config) compile() (map[string]*logrules.RuleSet, []finding.ConditionDefault, error) {
	byUnit, err := c.rulesByUnit()
	if err != nil {
		return nil, nil, err
	}
	specs := append(DefaultConditions(), c.Conditions...)
	sets := map[string]*logrules.RuleSet{}
	for unit, rules := range byUnit {
		set, err := logrules.Compile(rules, specs)
		if err != nil {
			if rerr, ok := err.(*logrules.RuleError); ok {
				for i, u := range c.Rules {
					if u.Name == rerr.Name {
						return nil, nil, &finding.FieldError{Field: "rules[" + strconv.Itoa(i) + "]." + rerr.Field, Value: rerr.Value, Reason: rerr.Err}
					}
				}
			}
			return nil, nil, fmt.Errorf("rules for %s: %w", unit, err)
		}
		sets[unit] = set
	}
	return sets, specs, nil
}

// Validate compiles the rules so that a bad one fails at start.
func (c *Config) Validate() error {
	_, _, err := c.compile()
	return err
}

// Registration is the check's entry in the registry. It is on by default
// only in binaries that can read the journal.
var Registration = checks.Define(Name, logsource.JournalAvailable, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env)
})

// Check follows the units its rules name.
type Check struct {
	cfg *Config
	log *zap.Logger
	// units are the rules of each unit followed, compiled once in New; a
	// restarted Run makes fresh engines from them.
	units map[string]*logrules.RuleSet
	conds []finding.ConditionDefault
	// recentUnits are read for record alone, which keeps every line read
	// for the evidence of a transition.
	recentUnits []string
	record      func(checks.Log, time.Time, string)
}

// New builds the check.
func New(cfg *Config, env checks.Env) (*Check, error) {
	units, conds, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	c := &Check{cfg: cfg, log: env.Log, units: units, conds: conds, record: env.Record}
	if env.Recent != nil {
		c.recentUnits = env.RecentUnits
	}
	return c, nil
}

func (c *Check) Name() string                           { return Name }
func (c *Check) Conditions() []finding.ConditionDefault { return c.conds }

// LogDriven marks the check as reporting conditions only from log lines.
func (c *Check) LogDriven() {}

// Run follows the journal until ctx ends, each unit's entries through an
// engine of its own.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	var rules []logrules.Rule
	for _, set := range c.units {
		rules = append(rules, set.Rules()...)
	}
	quiet := logrules.NewQuietStart(time.Now(), rules, c.conds)
	emit = quiet.Wrap(emit)
	defer checks.WhileBusy(ctx, expireInterval, checks.NewWaker(), func(now time.Time) time.Duration {
		quiet.ExpireTo(now, emit)
		return checks.UntilDue(quiet.NextDue(), time.Now())
	})()
	guarded := map[string]*logrules.Guarded{}
	wakes := map[string]*checks.Waker{}
	units := make([]string, 0, len(c.units))
	for u, set := range c.units {
		units = append(units, u)
		g := logrules.NewGuarded(set.Engine(), emit)
		guarded[u] = g
		// Only while the unit's engine has something left to do; each of
		// the unit's entries wakes it, after it is fed.
		wake := checks.NewWaker()
		wakes[u] = wake
		defer checks.WhileBusy(ctx, expireInterval, wake, func(now time.Time) time.Duration {
			g.ExpireTo(now, emit)
			return checks.BusyFor(g.Pending(), expireInterval)
		})()
		// Before the ticker stops: a report being read when the check
		// stops is reported with what it had.
		defer g.Stop(emit)
	}
	for _, u := range c.recentUnits {
		if !slices.Contains(units, u) {
			units = append(units, u)
		}
	}
	slices.Sort(units)
	follower := &logsource.JournalFollower{Dir: c.cfg.Dir, Units: units, FromStart: c.cfg.FromStart, Positioned: func() {
		c.log.Info("reading the journal", zap.Strings("units", units), zap.String("dir", c.cfg.Dir), zap.Bool("from_start", c.cfg.FromStart))
	}, Unwatched: func(err error) {
		c.log.Warn("cannot watch the journal's directories; looking for new entries every second instead", zap.Error(err))
	}}
	// No cursor is kept: the check reads from the journal's end, or its
	// start, on each start, as it always has.
	err := logsource.Follow(ctx, follower, nil, func(l logsource.Line) bool {
		c.record(checks.ServiceLog, l.Time, l.Unit+": "+l.Text)
		if g := guarded[l.Unit]; g != nil {
			g.Feed(logrules.Line{Text: l.Text, Time: l.Time}, l.Where, emit)
			wakes[l.Unit].Wake()
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("following the journal: %w", err)
	}
	return nil
}

// expireInterval is how often conditions with a quiet period are looked at.
const expireInterval = 10 * time.Second
