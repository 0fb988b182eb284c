// Package kmsg is the kernel log check: it reads /dev/kmsg and runs the log
// rules over each record.
package kmsg

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logrules/kernelrules"
	"github.com/nodeguard/nodeguard/pkg/logsource"
)

// Name is the check's name in configuration and metrics.
const Name = "kmsg"

// Config is the check's section of the config file.
type Config struct {
	// Rules are added to the built-in rules; one with a built-in rule's name
	// replaces it.
	Rules []logrules.Rule `json:"rules,omitempty"`
	// DisableRules names built-in rules to drop.
	DisableRules []string `json:"disableRules,omitempty"`
	// NPDRules are node-problem-detector log monitor files
	// (kernel-monitor.json) whose rules are added, for users migrating.
	// Where an NPD rule and a built-in one describe the same line with the
	// same reason, one finding is made, by the built-in rule.
	NPDRules []string `json:"npdRules,omitempty"`
	// Conditions declares condition types that user rules set, beyond the
	// built-in ones.
	Conditions []finding.ConditionDefault `json:"conditions,omitempty"`
	// DevKmsg reads /dev/kmsg; on by default. Turn it off to read only
	// Files (where /dev/kmsg cannot be read); with both, a kernel message
	// that reaches both would be reported twice.
	DevKmsg *bool `json:"devKmsg,omitempty"`
	// Journal reads the kernel's messages from the systemd journal
	// (_TRANSPORT=kernel), which needs no access to /dev/kmsg and so no
	// privileged container; JournalDir names a directory of journal files
	// instead of the system journal. Needs a binary built with the journald
	// tag. On a first start it reads only entries logged after it; after a
	// restart it resumes where it stopped: after the last entry it
	// reported, or a later one it read.
	Journal    bool   `json:"journal,omitempty"`
	JournalDir string `json:"journalDir,omitempty"`
	// Files are kernel log files to follow, such as /var/log/kern.log, in
	// syslog, dmesg or plain form; followed across rotation.
	Files []FileSource `json:"files,omitempty"`
	// StartAtEnd ignores the records already in the kernel's ring buffer
	// when the agent starts for the first time in a boot. By default it
	// reads them. Either way, after a restart in the same boot it resumes
	// where it stopped (after the last record it reported, or a later one
	// it read), so that problems logged while it was not running are
	// reported once.
	StartAtEnd bool `json:"startAtEnd,omitempty"`
	// BacklogLookback: on the first start in a boot, records older than this
	// are read but not reported, so that installing the agent on a node up
	// for weeks does not replay weeks of problems (and flood the event rate
	// limit).
	BacklogLookback finding.Duration `json:"backlogLookback,omitempty"`
	// ExpireInterval is how often conditions with a quiet period are
	// re-evaluated.
	ExpireInterval finding.Duration `json:"expireInterval,omitempty"`
	// DedupWindow is how long identical problem lines are one storm, one
	// event and a summary; "0" reports each line.
	DedupWindow finding.Duration `json:"dedupWindow,omitempty"`
}

// FileSource is one kernel log file to follow.
type FileSource struct {
	Path string `json:"path"`
	// FromStart reads what the file already holds; by default only lines
	// written after the agent starts.
	FromStart bool `json:"fromStart,omitempty"`
}

// DefaultConfig is the configuration a node gets without a config file.
func DefaultConfig() *Config {
	return &Config{
		ExpireInterval:  finding.Duration{Duration: 10 * time.Second},
		BacklogLookback: finding.Duration{Duration: 10 * time.Minute},
		DedupWindow:     finding.Duration{Duration: logrules.DefaultDedupWindow},
	}
}

// Engine returns a fresh engine over rules (this config's, compiled) with
// the config's settings for it.
func (c *Config) Engine(rules *logrules.RuleSet) *logrules.Engine {
	e := rules.Engine()
	e.SetDedupWindow(c.DedupWindow.Duration)
	return e
}

// Validate compiles the rules so that a bad one fails at start, naming it:
// the loader calls it before any check is built. New compiles them once
// more, for the check to keep.
func (c *Config) Validate() error {
	for i, f := range c.Files {
		if f.Path == "" {
			return &finding.FieldError{Field: "files[" + strconv.Itoa(i) + "].path", Value: "", Reason: "a file needs a path"}
		}
	}
	if c.DevKmsg != nil && !*c.DevKmsg && len(c.Files) == 0 && !c.Journal {
		return &finding.FieldError{Field: "devKmsg", Value: false, Reason: "with /dev/kmsg off, read the journal or name kernel log files to follow, or disable the check"}
	}
	if c.Journal && !logsource.JournalAvailable {
		return &finding.FieldError{Field: "journal", Value: true, Reason: logsource.ErrNoJournal.Error()}
	}
	for i, r := range c.Rules {
		if r.Source != "" && r.Source != "kmsg" {
			return &finding.FieldError{Field: "rules[" + strconv.Itoa(i) + "].source", Value: r.Source,
				Reason: `a kernel log rule's source is "kmsg" (it runs over /dev/kmsg and checks.kmsg.files); journald rules go under checks.journald`}
		}
	}
	_, err := c.Compile()
	return err
}

// ruleSet merges the built-in, configured and NPD rules and condition
// types.
func (c *Config) ruleSet() ([]logrules.Rule, []finding.ConditionDefault, error) {
	runtimeRules, runtimeConds := kernelrules.RuntimeRules()
	rules, err := logrules.Merge(append(kernelrules.Rules(), runtimeRules...), c.Rules, c.DisableRules)
	if err != nil {
		return nil, nil, &finding.FieldError{Field: "disableRules", Value: c.DisableRules, Reason: err.Error()}
	}
	conds := append(append(kernelrules.Conditions(), runtimeConds...), c.Conditions...)
	for i, path := range c.NPDRules {
		npdRules, npdConds, err := logrules.LoadNPD(path)
		if err != nil {
			return nil, nil, &finding.FieldError{Field: "npdRules[" + strconv.Itoa(i) + "]", Value: path, Reason: err.Error()}
		}
		rules, conds = logrules.AddNPD(rules, conds, npdRules, npdConds)
	}
	return rules, conds, nil
}

// Compile merges and compiles the check's rules. Each source gets an engine
// of its own from the one compiled set.
func (c *Config) Compile() (*logrules.RuleSet, error) {
	rules, conds, err := c.ruleSet()
	if err != nil {
		return nil, err
	}
	set, err := logrules.Compile(rules, conds)
	if rerr, ok := err.(*logrules.RuleError); ok {
		// Point at the user's rule when the bad rule is one of theirs.
		for i, u := range c.Rules {
			if u.Name == rerr.Name {
				return nil, &finding.FieldError{Field: "rules[" + strconv.Itoa(i) + "]." + rerr.Field, Value: rerr.Value, Reason: rerr.Err}
			}
		}
		return nil, &finding.FieldError{Field: "rules", Value: rerr.Name, Reason: rerr.Error()}
	}
	return set, err
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env, nil)
})

// The state directory's files: the same names as older agents kept, so that
// an upgrade resumes where they stopped.
const (
	kmsgCursor    = "kmsg-position.json"
	journalCursor = "kmsg-journal-cursor"
)

// Check reads kernel log records and turns them into findings.
type Check struct {
	cfg *Config
	log *zap.Logger
	// rules are compiled once, in New: a restarted Run makes fresh engines
	// from them rather than compiling again.
	rules   *logrules.RuleSet
	kmsg    logsource.Source
	cursors logsource.CursorStore
	now     func() time.Time
	// record keeps each kernel line for the evidence of a transition.
	record func(checks.Log, time.Time, string)
}

// New builds the check. A nil kmsg reads /dev/kmsg; tests pass their own.
func New(cfg *Config, env checks.Env, kmsg logsource.Source) (*Check, error) {
	rules, err := cfg.Compile()
	if err != nil {
		return nil, err
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Metrics == nil {
		env.Metrics = prometheus.NewRegistry()
	}
	if kmsg == nil {
		kmsg = &logsource.Kmsg{Log: env.Log, Metrics: logsource.NewKmsgMetrics(env.Metrics), ProcPath: env.Proc(),
			StartAtEnd: cfg.StartAtEnd, BacklogLookback: cfg.BacklogLookback.Duration, Now: env.Now}
	}
	return &Check{cfg: cfg, log: env.Log, rules: rules, kmsg: kmsg, cursors: logsource.CursorStore{Dir: env.StateDir}, now: env.Now, record: env.Record}, nil
}

func (c *Check) Name() string                           { return Name }
func (c *Check) Conditions() []finding.ConditionDefault { return c.rules.Conditions() }

// LogDriven marks the check as reporting conditions only from log lines.
func (c *Check) LogDriven() {}

// Run reads every configured source until ctx ends, each through an engine
// of its own (multi-line reports do not span sources). Each run starts fresh
// engines: what a report had gathered before a restart is not worth a stale
// match.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	// Outermost, so that it sees every condition the check reports.
	quiet := logrules.NewQuietStart(c.now(), c.rules.Rules(), c.rules.Conditions())
	emit = quiet.Wrap(emit)
	// Until every quiet period of the start has passed, and then never.
	defer checks.WhileBusy(ctx, c.expireEvery(), checks.NewWaker(), func(time.Time) time.Duration {
		quiet.ExpireTo(c.now(), emit)
		return checks.UntilDue(quiet.NextDue(), c.now())
	})()
	g, ctx := errgroup.WithContext(ctx)
	if c.cfg.DevKmsg == nil || *c.cfg.DevKmsg {
		// Resumes after the last record read in this boot.
		g.Go(func() error { return c.follow(ctx, emit, c.kmsg, "/dev/kmsg", kmsgCursor, nil) })
	}
	for _, f := range c.cfg.Files {
		follower := &logsource.FileFollower{Path: f.Path, FromStart: f.FromStart, Positioned: func() {
			c.log.Info("reading the kernel log", zap.String("source", f.Path), zap.Bool("from_start", f.FromStart))
		}}
		// A file has no cursor to keep; its lines are the kernel's when
		// their syslog or dmesg prefix says so.
		g.Go(func() error { return c.follow(ctx, emit, follower, f.Path, "", kernelText) })
	}
	if c.cfg.Journal {
		follower := &logsource.JournalFollower{Dir: c.cfg.JournalDir, Matches: []string{"_TRANSPORT=kernel"}, Positioned: func() {
			c.log.Info("reading the kernel log", zap.String("source", "journal"), zap.String("dir", c.cfg.JournalDir))
		}, BadCursor: func(cursor string, err error) {
			c.log.Warn("the saved journal cursor cannot be used; reading as on a first start", zap.String("cursor", cursor), zap.Error(err))
		}, Unwatched: func(err error) {
			c.log.Warn("cannot watch the journal's directories; looking for new kernel entries every second instead", zap.Error(err))
		}}
		// On a first start only entries logged after it; after a restart,
		// from the last entry read.
		g.Go(func() error { return c.follow(ctx, emit, follower, "the journal", journalCursor, nil) })
	}
	return g.Wait()
}

func (c *Check) expireEvery() time.Duration { return max(c.cfg.ExpireInterval.Duration, time.Second) }

// follow runs one source through an engine of its own until ctx ends,
// resuming from the cursor saved under cursor (none when empty). text, if
// set, picks the kernel's message out of a line, or says it is not one.
func (c *Check) follow(ctx context.Context, emit func(finding.Finding), src logsource.Source, what, cursor string, text func(string) (string, bool)) error {
	g := logrules.NewGuarded(c.cfg.Engine(c.rules), emit)
	var resume *logsource.Resume
	if cursor != "" {
		resume = c.cursors.Resume(cursor, c.log)
	}
	// Only while the engine or the cursor has something left to do: every
	// line read wakes it, and a quiet kernel log lets the agent sleep.
	wake := checks.NewWaker()
	defer checks.WhileBusy(ctx, c.expireEvery(), wake, func(time.Time) time.Duration {
		g.ExpireTo(c.now(), emit)
		// Not past a report whose findings are still held: a restart then
		// reads it again (and may report it twice) rather than never.
		if !g.Holding() {
			resume.Flush()
		}
		return checks.BusyFor(g.Pending() || resume.Moved(), c.expireEvery())
	})()
	// Before the ticker stops: a report being read when the check stops
	// (`nodeguard check` ending its wait) is reported with what it had.
	defer g.Stop(emit)
	// After the cursor moves, and (below) after a line is fed: waking
	// before either could let the loop look, find nothing, and sleep.
	resume.OnMove(wake.Wake)
	err := logsource.Follow(ctx, src, resume, func(l logsource.Line) bool {
		defer wake.Wake()
		msg, ok := l.Text, true
		if text != nil {
			msg, ok = text(l.Text)
		}
		if !ok {
			return false
		}
		at := l.Time
		if at.IsZero() {
			at = c.now()
		}
		// Before the rules: the line that makes a condition True is in
		// the evidence that transition captures.
		c.record(checks.KernelLog, at, msg)
		reported := false
		g.Feed(logrules.Line{Text: msg, Time: at}, l.Where, func(f finding.Finding) {
			reported = true
			emit(f)
		})
		return reported && !g.Holding()
	})
	if err != nil {
		return fmt.Errorf("following %s: %w", what, err)
	}
	return nil
}

// kernelText is the kernel's message in a kern.log or dmesg line.
func kernelText(line string) (string, bool) {
	p := logrules.ParseKernelLine(line)
	return p.Text, p.Kernel()
}
