// Package kmsg is the kernel log check: it reads /dev/kmsg and runs the log
// rules over each record.
package kmsg

import (
	"context"
	"fmt"
	"path/filepath"
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
	// restart it resumes after the last entry it reported.
	Journal    bool   `json:"journal,omitempty"`
	JournalDir string `json:"journalDir,omitempty"`
	// Files are kernel log files to follow, such as /var/log/kern.log, in
	// syslog, dmesg or plain form; followed across rotation.
	Files []FileSource `json:"files,omitempty"`
	// StartAtEnd ignores the records already in the kernel's ring buffer
	// when the agent starts for the first time in a boot. By default it
	// reads them. Either way, after a restart in the same boot it resumes
	// after the last record it reported, so that problems logged while it
	// was not running are reported once.
	StartAtEnd bool `json:"startAtEnd,omitempty"`
	// BacklogLookback: on the first start in a boot, records older than this
	// are read but not reported, so that installing the agent on a node up
	// for weeks does not replay weeks of problems (and flood the event rate
	// limit).
	BacklogLookback finding.Duration `json:"backlogLookback,omitempty"`
	// ExpireInterval is how often conditions with a quiet period are
	// re-evaluated.
	ExpireInterval finding.Duration `json:"expireInterval,omitempty"`
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
	}
}

// Validate compiles the rules so that a bad one fails at start, naming it.
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
	_, err := c.Engine()
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

func (c *Config) Engine() (*logrules.Engine, error) {
	rules, conds, err := c.ruleSet()
	if err != nil {
		return nil, err
	}
	e, err := logrules.NewEngine(rules, conds)
	if rerr, ok := err.(*logrules.RuleError); ok {
		// Point at the user's rule when the bad rule is one of theirs.
		for i, u := range c.Rules {
			if u.Name == rerr.Name {
				return nil, &finding.FieldError{Field: "rules[" + strconv.Itoa(i) + "]." + rerr.Field, Value: rerr.Value, Reason: rerr.Err}
			}
		}
		return nil, &finding.FieldError{Field: "rules", Value: rerr.Name, Reason: rerr.Error()}
	}
	return e, err
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env, nil)
})

// Check reads kernel log records and turns them into findings.
type Check struct {
	cfg      *Config
	log      *zap.Logger
	source   Source
	conds    []finding.ConditionDefault
	now      func() time.Time
	procPath string
	// position is nil when there is no state directory.
	position   *positionFile
	warnedSave bool
}

// New builds the check. A nil source reads /dev/kmsg; tests pass their own.
func New(cfg *Config, env checks.Env, source Source) (*Check, error) {
	e, err := cfg.Engine()
	if err != nil {
		return nil, err
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Metrics == nil {
		env.Metrics = prometheus.NewRegistry()
	}
	if source == nil {
		source = &devKmsg{log: env.Log, metrics: newSourceMetrics(env.Metrics), startAtEnd: cfg.StartAtEnd, now: env.Now}
	}
	c := &Check{cfg: cfg, log: env.Log, source: source, conds: e.Conditions(), now: env.Now, procPath: env.Proc()}
	if env.StateDir != "" {
		c.position = &positionFile{path: filepath.Join(env.StateDir, "kmsg-position.json")}
	}
	return c, nil
}

func (c *Check) Name() string                           { return Name }
func (c *Check) Conditions() []finding.ConditionDefault { return c.conds }

// LogDriven marks the check as reporting conditions only from log lines.
func (c *Check) LogDriven() {}

// Run reads every configured source until ctx ends, each through an engine
// of its own (multi-line reports do not span sources). Each run starts fresh
// engines: what a report had gathered before a restart is not worth a stale
// match.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	rules, conds, err := c.cfg.ruleSet()
	if err != nil {
		return err
	}
	// Outermost, so that it sees every condition the check reports.
	quiet := logrules.NewQuietStart(c.now(), rules, conds)
	emit = quiet.Wrap(emit)
	defer checks.Every(ctx, max(c.cfg.ExpireInterval.Duration, time.Second), func(time.Time) { quiet.ExpireTo(c.now(), emit) })()
	g, ctx := errgroup.WithContext(ctx)
	if c.cfg.DevKmsg == nil || *c.cfg.DevKmsg {
		g.Go(func() error { return c.runKmsg(ctx, emit) })
	}
	for _, f := range c.cfg.Files {
		g.Go(func() error { return c.runFile(ctx, emit, f) })
	}
	if c.cfg.Journal {
		g.Go(func() error { return c.runJournal(ctx, emit) })
	}
	return g.Wait()
}

// runJournal follows the kernel's messages in the systemd journal.
func (c *Check) runJournal(ctx context.Context, emit func(finding.Finding)) error {
	engine, err := c.cfg.Engine()
	if err != nil {
		return err
	}
	g := logrules.NewGuarded(engine)
	defer checks.Every(ctx, max(c.cfg.ExpireInterval.Duration, time.Second), func(time.Time) { g.ExpireTo(c.now(), emit) })()
	// Resume after the last entry reported before a restart; the cursor is
	// saved once a reported entry's findings are out.
	cursor := c.journalCursor()
	follower := &logsource.JournalFollower{Dir: c.cfg.JournalDir, Matches: []string{"_TRANSPORT=kernel"}, After: cursor.load(), Positioned: func() {
		c.log.Info("reading the kernel log", zap.String("source", "journal"), zap.String("dir", c.cfg.JournalDir))
	}}
	err = follower.Run(ctx, func(e logsource.JournalEntry) {
		reported := false
		g.Feed(logrules.Line{Text: e.Message, Time: e.Time}, "journal kernel", func(f finding.Finding) {
			reported = true
			emit(f)
		})
		if reported {
			cursor.save(e.Cursor)
		}
	})
	if err == nil && ctx.Err() == nil {
		err = fmt.Errorf("following the journal stopped")
	}
	return err
}

// journalCursor is where the journal source's cursor is kept, or a no-op
// without a state directory.
func (c *Check) journalCursor() cursorFile {
	if c.position == nil {
		return cursorFile{}
	}
	return cursorFile{path: filepath.Join(filepath.Dir(c.position.path), "kmsg-journal-cursor"), log: c.log}
}

// runFile follows a kernel log file (kern.log, saved dmesg output).
func (c *Check) runFile(ctx context.Context, emit func(finding.Finding), fc FileSource) error {
	engine, err := c.cfg.Engine()
	if err != nil {
		return err
	}
	g := logrules.NewGuarded(engine)
	defer checks.Every(ctx, max(c.cfg.ExpireInterval.Duration, time.Second), func(time.Time) { g.ExpireTo(c.now(), emit) })()
	n := 0
	follower := &logsource.FileFollower{Path: fc.Path, FromStart: fc.FromStart, Positioned: func() {
		c.log.Info("reading the kernel log", zap.String("source", fc.Path), zap.Bool("from_start", fc.FromStart))
	}}
	err = follower.Run(ctx, func(text string) {
		n++
		if p := logrules.ParseKernelLine(text); p.Kernel() {
			g.Feed(logrules.Line{Text: p.Text, Time: c.now()}, fc.Path+":"+strconv.Itoa(n), emit)
		}
	})
	if err == nil && ctx.Err() == nil {
		err = fmt.Errorf("following %s stopped", fc.Path)
	}
	return err
}

// runKmsg reads /dev/kmsg, resuming after the last record reported in this
// boot.
func (c *Check) runKmsg(ctx context.Context, emit func(finding.Finding)) error {
	engine, err := c.cfg.Engine()
	if err != nil {
		return err
	}
	pos := c.loadPosition()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	records := make(chan Record, 1024)
	sourceErr := make(chan error, 1)
	go func() { sourceErr <- c.source.Run(ctx, pos.LastSeq, records) }()

	expire := time.NewTicker(max(c.cfg.ExpireInterval.Duration, time.Second))
	defer expire.Stop()
	saved := pos.LastSeq
	defer func() { c.savePosition(pos, &saved) }()
	// Without a position in this boot, old backlog is read, not reported.
	var cutoff time.Time
	if pos.LastSeq < 0 {
		cutoff = c.now().Add(-c.cfg.BacklogLookback.Duration)
	}
	var buf []finding.Finding
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-sourceErr:
			if err == nil && ctx.Err() == nil {
				err = fmt.Errorf("kernel log source stopped")
			}
			return err
		case rec := <-records:
			buf = buf[:0]
			if !rec.Received.Before(cutoff) {
				buf = engine.Feed(logrules.Line{Text: rec.Message, Time: rec.Received}, buf)
			}
			for _, f := range buf {
				f.Source = "kmsg seq " + strconv.FormatUint(rec.Seq, 10)
				emit(f)
			}
			pos.LastSeq = int(rec.Seq)
			if len(buf) > 0 {
				// Reported records are saved at once, so that a restart
				// does not report them again.
				c.savePosition(pos, &saved)
			}
		case <-expire.C:
			buf = engine.Expire(c.now(), buf[:0])
			for _, f := range buf {
				emit(f)
			}
			c.savePosition(pos, &saved)
		}
	}
}

// loadPosition returns where to resume: after the last record reported in
// this boot, or from the oldest record when the boot is new or unknown.
func (c *Check) loadPosition() position {
	bootID, err := readBootID(c.procPath)
	if err != nil {
		c.log.Warn("cannot tell this boot from the last; kernel log records may be reported again after a restart", zap.Error(err))
	}
	fresh := position{BootID: bootID, LastSeq: -1}
	if c.position == nil || bootID == "" {
		return fresh
	}
	pos, err := c.position.load()
	if err != nil {
		c.log.Warn("starting from the oldest kernel log record", zap.Error(err))
		return fresh
	}
	if pos.BootID != bootID {
		return fresh
	}
	return pos
}

// savePosition writes the position if it moved since the last save.
func (c *Check) savePosition(pos position, saved *int) {
	if c.position == nil || pos.BootID == "" || pos.LastSeq == *saved {
		return
	}
	if err := c.position.save(pos); err != nil {
		if !c.warnedSave {
			c.log.Warn("kernel log position not saved; records may be reported again after a restart", zap.Error(err))
			c.warnedSave = true
		}
		return
	}
	*saved = pos.LastSeq
}
