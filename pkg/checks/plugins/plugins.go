// Package plugins runs node-problem-detector's custom plugin monitors
// (custom-plugin-monitor.json and the like) as they are: each rule's program
// every interval, its exit status read as NPD reads it (0 OK, 1 a problem,
// anything else unknown) and its output as the message. Temporary rules
// make events, permanent rules set their condition, as NPD does, so that a
// team moving off NPD keeps its scripts.
package plugins

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "plugins"

// Config is the check's section of the config file.
type Config struct {
	// Files are NPD custom plugin monitor files, read as NPD reads them.
	// --npd-rules adds the custom plugin monitors among its files here.
	Files []string `json:"files,omitempty"`
	// Monitors are custom plugin monitors written in the config file, in
	// the files' schema.
	Monitors []Monitor `json:"monitors,omitempty"`
}

// DefaultConfig runs nothing: plugins are the user's.
func DefaultConfig() *Config { return &Config{} }

// Validate reads every file and checks every monitor, so that a mistake
// fails at start, naming the file, line and field.
func (c *Config) Validate() error {
	_, err := c.load()
	return err
}

// namedMonitor is a monitor with the name it has in logs and metrics.
type namedMonitor struct {
	name string
	*Monitor
}

// load reads the files and checks the inline monitors.
func (c *Config) load() ([]namedMonitor, error) {
	var out []namedMonitor
	taken := map[string]int{}
	name := func(n string) string {
		taken[n]++
		if taken[n] > 1 {
			n += "-" + strconv.Itoa(taken[n])
		}
		return n
	}
	for i, path := range c.Files {
		m, err := LoadFile(path)
		if err != nil {
			return nil, &finding.FieldError{Field: "files[" + strconv.Itoa(i) + "]", Value: path, Reason: err.Error()}
		}
		out = append(out, namedMonitor{name(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))), m})
	}
	for i := range c.Monitors {
		m := &c.Monitors[i]
		field := "monitors[" + strconv.Itoa(i) + "]"
		if err := m.Validate(); err != nil {
			if fe, ok := err.(*finding.FieldError); ok {
				return nil, &finding.FieldError{Field: field + "." + fe.Field, Value: fe.Value, Reason: fe.Reason}
			}
			return nil, &finding.FieldError{Field: field, Value: m.Source, Reason: err.Error()}
		}
		n := m.Source
		if n == "" {
			n = field
		}
		out = append(out, namedMonitor{name(n), m})
	}
	return out, nil
}

// Registration is the check's entry in the registry. It is on by default:
// with no files and no monitors it runs nothing and costs nothing, and a
// file given with --npd-rules or in checks.plugins.files then needs no
// second switch to run.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env)
})

// rule is one rule of one monitor, ready to run.
type rule struct {
	mon      *monitor
	index    int
	Rule     Rule
	id       string // the metrics' rule label
	interval time.Duration
	timeout  time.Duration
}

// monitor is a monitor's rules and the concurrency limit they share.
type monitor struct {
	name  string
	m     *Monitor
	slots chan struct{}
}

// condState is the check's state of one condition type: what it last
// reported, as NPD's monitor keeps it, starting from the healthy default.
type condState struct {
	def      finding.ConditionDefault
	status   finding.Status
	reason   string
	message  string
	reported bool // told the reporter once since this run began
}

// Check runs the plugins.
type Check struct {
	log     *zap.Logger
	now     func() time.Time
	rules   []*rule
	conds   []finding.ConditionDefault
	metrics *metrics
}

type metrics struct {
	runs     *prometheus.CounterVec
	skipped  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nodeguard_plugin_runs_total",
			Help: "Custom plugin runs by monitor, rule and result: ok, problem (exit 1), unknown (exit 2 or more, or a signal), timeout (killed at its deadline), error (could not start)."},
			[]string{"monitor", "rule", "result"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nodeguard_plugin_skipped_runs_total",
			Help: "Custom plugin runs not started because the rule's last run had not finished (or was waiting for one of the monitor's concurrency slots)."},
			[]string{"monitor", "rule"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nodeguard_plugin_run_duration_seconds",
			Help: "How long custom plugin runs took.", Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 180}},
			[]string{"monitor", "rule"}),
	}
	reg.MustRegister(m.runs, m.skipped, m.duration)
	return m
}

// New reads the monitors and builds the check.
func New(cfg *Config, env checks.Env) (*Check, error) {
	mons, err := cfg.load()
	if err != nil {
		return nil, err
	}
	if env.Log == nil {
		env.Log = zap.NewNop()
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Metrics == nil {
		env.Metrics = prometheus.NewRegistry()
	}
	c := &Check{log: env.Log, now: env.Now, metrics: newMetrics(env.Metrics)}
	have := map[string]bool{}
	for _, nm := range mons {
		mon := &monitor{name: nm.name, m: nm.Monitor, slots: make(chan struct{}, nm.concurrency())}
		for _, d := range nm.Conditions {
			// A type declared by two monitors is one condition: the first
			// declaration gives its healthy state.
			if !have[d.Type] {
				have[d.Type] = true
				c.conds = append(c.conds, catalogDefault(d))
			}
		}
		for i, r := range nm.Rules {
			ru := &rule{mon: mon, index: i, Rule: r, id: strconv.Itoa(i) + "-" + r.Reason,
				interval: nm.ruleInterval(r), timeout: nm.ruleTimeout(r)}
			c.rules = append(c.rules, ru)
			// Zero, so that a rule that never ran shows in a scrape.
			c.metrics.skipped.WithLabelValues(mon.name, ru.id)
		}
	}
	return c, nil
}

func (c *Check) Name() string                           { return Name }
func (c *Check) Conditions() []finding.ConditionDefault { return c.conds }

// ran is one rule's outcome, on its way to the loop that owns the
// condition state.
type ran struct {
	rule *rule
	out  outcome
}

// Run runs every rule on its own schedule until ctx ends: once at once, as
// NPD runs every rule at start, then every interval. A rule whose last run
// has not finished is not started again; the tick is counted as skipped.
// One loop owns the condition state and turns outcomes into findings, in
// the order the runs finished.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	states := map[string]*condState{}
	for _, d := range c.conds {
		states[d.Type] = &condState{def: d, status: finding.StatusFalse, reason: d.Reason, message: d.Message}
	}
	results := make(chan ran)
	var wg sync.WaitGroup
	for _, r := range c.rules {
		wg.Go(func() { c.schedule(ctx, r, results) })
	}
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case res := <-results:
			for _, f := range c.judge(res, states) {
				emit(f)
			}
		}
	}
}

// schedule runs one rule every interval until ctx ends, never two runs of
// it at once.
func (c *Check) schedule(ctx context.Context, r *rule, results chan<- ran) {
	log := c.log.With(zap.String("monitor", r.mon.name), zap.String("rule", r.id), zap.String("path", r.Rule.Path))
	done := make(chan outcome, 1)
	inflight := false
	start := func() {
		inflight = true
		go func() {
			select {
			case r.mon.slots <- struct{}{}:
			case <-ctx.Done():
				done <- outcome{stopped: true}
				return
			}
			o := runPlugin(ctx, r.Rule.Path, r.Rule.Args, r.timeout, r.mon.m.maxOutput())
			<-r.mon.slots
			done <- o
		}()
	}
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	start()
	for {
		select {
		case <-ctx.Done():
			if inflight {
				<-done // runPlugin kills the group when ctx ends
			}
			return
		case o := <-done:
			inflight = false
			if o.stopped {
				continue
			}
			c.observe(log, r, o)
			select {
			case results <- ran{r, o}:
			case <-ctx.Done():
			}
		case <-ticker.C:
			if inflight {
				c.metrics.skipped.WithLabelValues(r.mon.name, r.id).Inc()
				log.Debug("plugin's last run has not finished; not starting another", zap.Duration("interval", r.interval))
				continue
			}
			start()
		}
	}
}

// observe counts and logs one run.
func (c *Check) observe(log *zap.Logger, r *rule, o outcome) {
	c.metrics.runs.WithLabelValues(r.mon.name, r.id, o.result()).Inc()
	c.metrics.duration.WithLabelValues(r.mon.name, r.id).Observe(o.took.Seconds())
	fields := []zap.Field{zap.String("result", o.result()), zap.Duration("took", o.took), zap.String("message", o.message)}
	if o.stderr != "" {
		fields = append(fields, zap.String("stderr", o.stderr))
	}
	switch {
	case o.notStarted != nil, o.timedOut:
		log.Warn("plugin failed", fields...)
	case o.status == statusOK:
		log.Debug("plugin ran", fields...)
	default:
		log.Info("plugin ran", fields...)
	}
}

// judge turns one outcome into findings, as NPD's custom plugin monitor
// does: a temporary rule makes a Warning event when its plugin did not say
// OK; a permanent rule moves its condition and makes an event when the
// condition changes.
func (c *Check) judge(res ran, states map[string]*condState) []finding.Finding {
	r, o := res.rule, res.out
	now := c.now()
	source := r.mon.name + " rules[" + strconv.Itoa(r.index) + "] " + r.Rule.Path
	if r.Rule.Type == temporary {
		// NPD makes the event for exit 2 and timeouts too (the plugin ran
		// and something is off); a plugin that never started says nothing
		// of the node, and its failure is in the log and the metrics.
		if o.status == statusOK || o.notStarted != nil {
			return nil
		}
		f := finding.Event(finding.SeverityWarning, r.Rule.Reason, o.message)
		f.Time, f.Source = now, source
		return []finding.Finding{f}
	}
	st := states[r.Rule.Condition]
	next := finding.StatusFalse
	switch o.status {
	case statusProblem:
		next = finding.StatusTrue
	case statusUnknown:
		next = finding.StatusUnknown
	}
	reason, message, change := transition(st, next, r.Rule.Reason, o.message, r.mon.m.messageChanges())
	var out []finding.Finding
	if change {
		st.status, st.reason, st.message = next, reason, message
		sev := finding.SeverityInfo
		if next == finding.StatusTrue {
			sev = finding.SeverityWarning
		}
		ev := finding.Event(sev, reason, fmt.Sprintf("condition %s is now %s (%s): %s", st.def.Type, next, reason, message))
		ev.Time, ev.Source = now, source
		out = append(out, ev)
	}
	if change || !st.reported {
		// The first word of a run is always passed on, changed or not: the
		// reporter may hold a state this run has not seen (a condition left
		// True on the Node by the agent before a restart).
		f := finding.Condition(st.def.Type, st.status, st.reason, st.message)
		f.Time, f.Source = now, source
		out = append(out, f)
		st.reported = true
	}
	return out
}

// transition is NPD's rule for a permanent problem's condition: given its
// current state and a run's status, the reason and message it moves to,
// and whether it moves at all.
//
//   - Turning True takes the rule's reason and the plugin's message.
//   - Leaving True, or moving between False and Unknown, takes the healthy
//     reason; the message is the healthy one for False and the plugin's for
//     Unknown, which says why it could not tell.
//   - Staying True changes only when another rule's reason is the cause now,
//     or, with enable_message_change_based_condition_update, the message
//     changed.
//   - Staying False or Unknown changes nothing.
func transition(st *condState, next finding.Status, ruleReason, msg string, messageChanges bool) (reason, message string, change bool) {
	healthyMessage := func() string {
		if next == finding.StatusFalse {
			return st.def.Message
		}
		return msg
	}
	switch {
	case st.status == finding.StatusTrue && next != finding.StatusTrue:
		return st.def.Reason, healthyMessage(), true
	case st.status != finding.StatusTrue && next == finding.StatusTrue:
		return ruleReason, msg, true
	case st.status != next:
		return st.def.Reason, healthyMessage(), true
	case next == finding.StatusTrue && (st.reason != ruleReason || (messageChanges && st.message != msg)):
		return ruleReason, msg, true
	}
	return st.reason, st.message, false
}
