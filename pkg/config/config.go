// Package config loads nodeguard's YAML configuration, checking every field
// against the types it decodes into so that a mistake fails at start with the
// file, line, field and value named.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/fieldcheck"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Config is the agent's configuration. Flags override the file.
type Config struct {
	// NodeName is the Node to report on; defaults to $NODE_NAME.
	NodeName string `json:"nodeName,omitempty"`
	// Kubeconfig, when set, is used instead of the in-cluster config.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Standalone prints findings and talks to no API server.
	Standalone bool `json:"standalone,omitempty"`
	// Output is how findings are printed: "text" or "json".
	Output string `json:"output,omitempty"`
	// ListenAddress serves /metrics and /healthz; empty turns it off.
	ListenAddress string `json:"listenAddress,omitempty"`
	// LogTo is where the agent's own logs go: "stderr" or "journald".
	LogTo string `json:"logTo,omitempty"`
	// LogFormat is "json" or "console" for stderr logs.
	LogFormat string `json:"logFormat,omitempty"`
	// ProcPath and SysPath are the host's /proc and /sys.
	ProcPath string `json:"procPath,omitempty"`
	SysPath  string `json:"sysPath,omitempty"`
	// StateDir keeps small state files across restarts.
	StateDir string `json:"stateDir,omitempty"`
	// KeepStartupPages keeps the pages of the agent's binary that start-up
	// touched mapped, rather than giving them back 30 s after start.
	KeepStartupPages bool `json:"keepStartupPages,omitempty"`
	// ReportDegraded publishes NodeguardDegraded, the agent's own health,
	// on the Node.
	ReportDegraded bool              `json:"reportDegraded,omitempty"`
	Reporter       ReporterConfig    `json:"reporter"`
	Remediation    RemediationConfig `json:"remediation"`
	Evidence       EvidenceConfig    `json:"evidence"`
	// Checks holds each check's section, keyed by check name. Every section
	// takes "enabled" besides the check's own fields.
	Checks map[string]json.RawMessage `json:"checks,omitempty"`

	// Enabled and CheckConfigs are filled from Checks by Load.
	Enabled      map[string]bool `json:"-"`
	CheckConfigs map[string]any  `json:"-"`
}

// ReporterConfig tunes how findings reach the API server.
type ReporterConfig struct {
	// Heartbeat rewrites the conditions this often with nothing changed.
	Heartbeat finding.Duration `json:"heartbeat,omitempty"`
	// MinWriteInterval coalesces bursts: at most one status write this often.
	MinWriteInterval finding.Duration `json:"minWriteInterval,omitempty"`
	// EventQPS and EventBurst rate-limit the events about the Node, per
	// event type (Warning, Normal), as client-go's spam filter keys them.
	EventQPS   float64 `json:"eventQPS,omitempty"`
	EventBurst int     `json:"eventBurst,omitempty"`
	// EventSpoolSize bounds the events kept (under stateDir) until the API
	// server has them.
	EventSpoolSize int `json:"eventSpoolSize,omitempty"`
	// ClientQPS and ClientBurst limit the agent's API client as a whole.
	ClientQPS   float64 `json:"clientQPS,omitempty"`
	ClientBurst int     `json:"clientBurst,omitempty"`
	// Reasons hold, by event reason, what to send of it to the Node.
	Reasons map[string]finding.EventPolicy `json:"reasons,omitempty"`
	// AggregateConditions also publishes the EKS node monitoring agent's
	// aggregate types (KernelReady, ...; finding.Aggregates), derived from
	// nodeguard's own, for consumers that act on them (Karpenter's node
	// repair). The agent then refuses to start where another writer owns
	// one of them on the Node.
	AggregateConditions bool `json:"aggregateConditions,omitempty"`
}

// EvidenceConfig says what is captured under stateDir/evidence when a
// condition turns True, and how much of it is kept.
type EvidenceConfig struct {
	// Enabled captures evidence; on by default.
	Enabled *bool `json:"enabled,omitempty"`
	// Conditions are the condition types whose turning True captures;
	// empty is every type the enabled checks own but those marked noisy
	// in pkg/finding's catalog.
	Conditions []string `json:"conditions,omitempty"`
	// LogWindow is how far back the kernel and service log lines go.
	LogWindow finding.Duration `json:"logWindow,omitempty"`
	// KernelLogBytes and ServiceLogBytes size the rings of recent lines
	// the log checks feed (kept in memory, headers included).
	KernelLogBytes  int `json:"kernelLogBytes,omitempty"`
	ServiceLogBytes int `json:"serviceLogBytes,omitempty"`
	// ServiceUnits are units whose journal lines the journald check keeps
	// for the evidence, beside those its rules read.
	ServiceUnits []string `json:"serviceUnits,omitempty"`
	// MaxDirBytes caps one capture's directory; MaxTotalBytes all of them,
	// the oldest removed to make room.
	MaxDirBytes   int64 `json:"maxDirBytes,omitempty"`
	MaxTotalBytes int64 `json:"maxTotalBytes,omitempty"`
	// TopProcesses is how many processes are listed by RSS and by CPU time.
	TopProcesses int `json:"topProcesses,omitempty"`
	// Timeout bounds one capture; QueueSize how many transitions may wait
	// for the capturer before more are skipped.
	Timeout   finding.Duration `json:"timeout,omitempty"`
	QueueSize int              `json:"queueSize,omitempty"`
}

// On says whether evidence is captured.
func (e EvidenceConfig) On() bool { return e.Enabled == nil || *e.Enabled }

// RemediationConfig holds the opt-in actions nodeguard takes on the node.
type RemediationConfig struct {
	RestartKubelet RestartKubeletConfig `json:"restartKubelet"`
	// Taints are put on the node while their conditions are True and taken
	// off when they clear. Each needs the RBAC in deploy/remediation.
	Taints []TaintRule `json:"taints,omitempty"`
}

// TaintRule puts a taint on the node while a condition is True.
type TaintRule struct {
	Condition string `json:"condition"`
	Key       string `json:"key"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute.
	Effect string `json:"effect"`
}

// RestartKubeletConfig restarts the kubelet through systemd when a
// condition that blames it has held for After, at most once per Cooldown.
// Off by default: it needs the host's D-Bus socket and a privileged pod.
type RestartKubeletConfig struct {
	Enabled  bool             `json:"enabled,omitempty"`
	Unit     string           `json:"unit,omitempty"`
	When     []string         `json:"when,omitempty"`
	After    finding.Duration `json:"after,omitempty"`
	Cooldown finding.Duration `json:"cooldown,omitempty"`
	Timeout  finding.Duration `json:"timeout,omitempty"`
}

// Default returns the configuration a node gets with no file and no flags.
func Default(registry checks.Registry) *Config {
	c := &Config{
		Output:        "text",
		ListenAddress: ":9102",
		LogTo:         "stderr",
		LogFormat:     "json",
		ProcPath:      "/proc",
		SysPath:       "/sys",
		StateDir:      "/var/lib/nodeguard",
		Reporter: ReporterConfig{
			Heartbeat:        finding.Duration{Duration: 5 * time.Minute},
			MinWriteInterval: finding.Duration{Duration: time.Second},
			EventQPS:         1.0 / 30,
			EventBurst:       25,
			EventSpoolSize:   1000,
			ClientQPS:        5,
			ClientBurst:      10,
		},
		Remediation: RemediationConfig{RestartKubelet: RestartKubeletConfig{
			Unit:     "kubelet.service",
			When:     []string{finding.KubeletLeaseStale.Type},
			After:    finding.Duration{Duration: 2 * time.Minute},
			Cooldown: finding.Duration{Duration: 30 * time.Minute},
			Timeout:  finding.Duration{Duration: time.Minute},
		}},
		Evidence: EvidenceConfig{
			LogWindow:       finding.Duration{Duration: 5 * time.Minute},
			KernelLogBytes:  256 << 10,
			ServiceLogBytes: 128 << 10,
			ServiceUnits:    []string{"kubelet.service", "containerd.service", "crio.service", "docker.service"},
			MaxDirBytes:     1 << 20,
			MaxTotalBytes:   16 << 20,
			TopProcesses:    15,
			Timeout:         finding.Duration{Duration: 10 * time.Second},
			QueueSize:       4,
		},
		Enabled:      map[string]bool{},
		CheckConfigs: map[string]any{},
	}
	for _, reg := range registry {
		c.Enabled[reg.Name] = reg.DefaultEnabled
		c.CheckConfigs[reg.Name] = reg.NewConfig()
	}
	return c
}

// Error is a configuration error: the file and line when known, the field's
// dotted path, and what is wrong. It is the strict reader's error, said as
// the config file's.
type Error fieldcheck.Error

func (e *Error) Error() string {
	fe := fieldcheck.Error(*e)
	if fe.File == "" {
		fe.File = "flags"
	}
	return oneLine.Replace("config " + fe.Error())
}

// oneLine escapes line breaks, which a key or value from the file may hold,
// so that an error is always one line.
var oneLine = strings.NewReplacer("\r", `\r`, "\n", `\n`)

// Load reads the file at path over the defaults. An empty path gives the
// defaults.
func Load(path string, registry checks.Registry) (*Config, error) {
	c := Default(registry)
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Reason: fmt.Sprintf("reading the file: %v", err)}
	}
	if err := c.parse(path, data, registry); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) parse(path string, data []byte, registry checks.Registry) error {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		line, problem := yamlError(err)
		return &Error{File: path, Line: line, Reason: "not valid YAML: " + problem}
	}
	if len(doc.Content) == 0 {
		return nil // an empty file is all defaults
	}
	root := doc.Content[0]
	if err := checkNode(root, reflect.TypeFor[Config](), "", registry); err != nil {
		err.File = path
		return err
	}
	// Decode the tree that was checked, with the same YAML parser: another
	// parser would read some values differently (YAML 1.1 reads `off` and
	// `yes` as booleans, so listenAddress: off became "false").
	var tree any
	if err := root.Decode(&tree); err != nil {
		line, problem := yamlError(err)
		return &Error{File: path, Line: line, Reason: "not valid YAML: " + problem}
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return &Error{File: path, Reason: err.Error()}
	}
	if err := json.Unmarshal(js, c); err != nil {
		return &Error{File: path, Reason: err.Error()}
	}
	for name, raw := range c.Checks {
		reg, _ := registry.Lookup(name) // checkNode rejected unknown names
		var section struct {
			Enabled *bool `json:"enabled"`
		}
		if err := json.Unmarshal(raw, &section); err != nil {
			return &Error{File: path, Line: lineOf(root, "checks."+name), Field: "checks." + name, Reason: err.Error()}
		}
		if section.Enabled != nil {
			c.Enabled[name] = *section.Enabled
		}
		cfg := reg.NewConfig()
		if err := json.Unmarshal(raw, cfg); err != nil {
			return &Error{File: path, Line: lineOf(root, "checks."+name), Field: "checks." + name, Reason: err.Error()}
		}
		c.CheckConfigs[name] = cfg
	}
	if err := c.Validate(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
			ce.Line = lineOf(root, ce.Field)
		}
		return err
	}
	return nil
}

// The values Output, LogTo and LogFormat may take; the command line
// completes its flags from these.
var (
	Outputs    = []string{"text", "json"}
	LogTargets = []string{"stderr", "journald"}
	LogFormats = []string{"json", "console"}
)

// Validate checks values that their types allow but nodeguard does not.
func (c *Config) Validate() error {
	oneOf := func(field, value string, allowed ...string) error {
		if slices.Contains(allowed, value) {
			return nil
		}
		return &Error{Field: field, Reason: fmt.Sprintf("%q is not one of %s", value, strings.Join(allowed, ", "))}
	}
	for _, err := range []error{
		oneOf("output", c.Output, Outputs...),
		oneOf("logTo", c.LogTo, LogTargets...),
		oneOf("logFormat", c.LogFormat, LogFormats...),
	} {
		if err != nil {
			return err
		}
	}
	positive := []struct {
		field string
		ok    bool
		value any
	}{
		{"reporter.heartbeat", c.Reporter.Heartbeat.Duration >= 10*time.Second, c.Reporter.Heartbeat},
		{"reporter.minWriteInterval", c.Reporter.MinWriteInterval.Duration > 0, c.Reporter.MinWriteInterval},
		{"reporter.eventQPS", c.Reporter.EventQPS > 0, c.Reporter.EventQPS},
		{"reporter.eventBurst", c.Reporter.EventBurst > 0, c.Reporter.EventBurst},
		{"reporter.eventSpoolSize", c.Reporter.EventSpoolSize > 0, c.Reporter.EventSpoolSize},
		{"reporter.clientQPS", c.Reporter.ClientQPS > 0, c.Reporter.ClientQPS},
		{"reporter.clientBurst", c.Reporter.ClientBurst > 0, c.Reporter.ClientBurst},
	}
	if rk := c.Remediation.RestartKubelet; rk.Enabled {
		positive = append(positive, []struct {
			field string
			ok    bool
			value any
		}{
			{"remediation.restartKubelet.after", rk.After.Duration > 0, rk.After},
			{"remediation.restartKubelet.cooldown", rk.Cooldown.Duration > 0, rk.Cooldown},
			{"remediation.restartKubelet.timeout", rk.Timeout.Duration > 0, rk.Timeout},
			{"remediation.restartKubelet.unit", rk.Unit != "", rk.Unit},
			{"remediation.restartKubelet.when", len(rk.When) > 0, rk.When},
		}...)
	}
	for i, tr := range c.Remediation.Taints {
		field := fmt.Sprintf("remediation.taints[%d]", i)
		switch {
		case c.Reporter.AggregateConditions && finding.IsAggregate(tr.Condition):
			return &Error{Field: field + ".condition", Reason: invertedAggregate(tr.Condition)}
		case tr.Condition == "":
			return &Error{Field: field + ".condition", Reason: "names no condition type"}
		case tr.Key == "":
			return &Error{Field: field + ".key", Reason: "names no taint key"}
		case tr.Effect != "NoSchedule" && tr.Effect != "PreferNoSchedule" && tr.Effect != "NoExecute":
			return &Error{Field: field + ".effect", Reason: fmt.Sprintf("%q is not NoSchedule, PreferNoSchedule or NoExecute", tr.Effect)}
		}
	}
	if rk := c.Remediation.RestartKubelet; rk.Enabled && c.Reporter.AggregateConditions {
		for i, t := range rk.When {
			if finding.IsAggregate(t) {
				return &Error{Field: fmt.Sprintf("remediation.restartKubelet.when[%d]", i), Reason: invertedAggregate(t)}
			}
		}
	}
	if err := validateReasons(c.Reporter.Reasons); err != nil {
		return err
	}
	if err := c.Evidence.validate(); err != nil {
		return err
	}
	for _, p := range positive {
		if !p.ok {
			reason := fmt.Sprintf("%v must be above zero", p.value)
			if p.field == "reporter.heartbeat" {
				reason = fmt.Sprintf("%v is below the least heartbeat, 10s", p.value)
			}
			return &Error{Field: p.field, Reason: reason}
		}
	}
	for name, cfg := range c.CheckConfigs {
		v, ok := cfg.(checks.Validator)
		if !ok || !c.Enabled[name] {
			continue
		}
		if err := v.Validate(); err != nil {
			field := "checks." + name
			var fe *finding.FieldError
			if errors.As(err, &fe) {
				return &Error{Field: field + "." + fe.Field, Reason: fmt.Sprintf("%s (value %v)", fe.Reason, fe.Value)}
			}
			return &Error{Field: field, Reason: err.Error()}
		}
	}
	return nil
}

// SetEnabled turns a check on or off by name, as the --check.NAME flags do.
func (c *Config) SetEnabled(registry checks.Registry, name string, on bool) error {
	if _, ok := registry.Lookup(name); !ok {
		return &Error{Field: "checks." + name, Reason: fmt.Sprintf("no check is named %q; known checks: %s", name, strings.Join(registry.Names(), ", "))}
	}
	c.Enabled[name] = on
	return nil
}

// yamlParserProblems are the problems yaml.v3's parser (not its scanner)
// reports. It counts their lines from 0, and leaves out a line it counts as 0.
var yamlParserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected key",
	"did not find expected '-' indicator",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found duplicate %TAG directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// yamlError splits a YAML error into its line, counted from 1 (0 when not
// known), and its problem on one line.
func yamlError(err error) (int, string) {
	msg := err.Error()
	var te *yamlv3.TypeError
	typeErr := errors.As(err, &te) && len(te.Errors) > 0
	if typeErr {
		msg = strings.TrimSpace(te.Errors[0]) // "line N: ...", counted from 1
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		n, problem, found := strings.Cut(rest, ": ")
		if v, err := strconv.Atoi(n); err == nil && found {
			line, msg = v, problem
		}
	}
	if typeErr {
		return line, msg
	}
	switch {
	case slices.Contains(yamlParserProblems, msg):
		line++
	case line == 0 && startsWithAny(msg, "found ", "did not find ", "could not find ", "mapping ", "block sequence "):
		// A scanner problem on the first line.
		line = 1
	}
	return line, msg
}

func startsWithAny(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// invertedAggregate says why remediation cannot act on an aggregate type:
// it acts while a condition is True, which an aggregate is while healthy.
func invertedAggregate(condType string) string {
	return fmt.Sprintf("%s is an aggregate condition, True while the node is healthy; name the nodeguard condition types it is made of instead (docs/consumers.md)", condType)
}

// validateReasons checks the per-reason event settings, in the order of the
// reasons' names so that the first mistake is always the same one.
func validateReasons(reasons map[string]finding.EventPolicy) error {
	names := make([]string, 0, len(reasons))
	for name := range reasons {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p, field := reasons[name], "reporter.reasons."+name
		switch {
		case p.MinOccurrences < 0:
			return &Error{Field: field + ".minOccurrences", Reason: fmt.Sprintf("%d is negative", p.MinOccurrences)}
		case p.MinOccurrences > 1 && p.Window.Duration <= 0:
			return &Error{Field: field + ".window", Reason: fmt.Sprintf("minOccurrences %d needs a window above zero, such as 10m", p.MinOccurrences)}
		case p.MinOccurrences <= 1 && p.Window.Duration != 0:
			return &Error{Field: field + ".window", Reason: "a window counts minOccurrences, which is not above 1"}
		case p.EventsPerHour < 0:
			return &Error{Field: field + ".eventsPerHour", Reason: fmt.Sprintf("%d is negative", p.EventsPerHour)}
		}
	}
	return nil
}

// validate checks the evidence settings when evidence is captured.
func (e EvidenceConfig) validate() error {
	if !e.On() {
		return nil
	}
	for i, c := range e.Conditions {
		if c == "" {
			return &Error{Field: fmt.Sprintf("evidence.conditions[%d]", i), Reason: "names no condition type"}
		}
	}
	for i, u := range e.ServiceUnits {
		if u == "" || strings.ContainsAny(u, "/ ") {
			return &Error{Field: fmt.Sprintf("evidence.serviceUnits[%d]", i), Reason: fmt.Sprintf("%q is not a systemd unit name such as containerd.service", u)}
		}
	}
	const least = 4 << 10
	switch {
	case e.LogWindow.Duration <= 0:
		return &Error{Field: "evidence.logWindow", Reason: fmt.Sprintf("%v must be above zero", e.LogWindow)}
	case e.KernelLogBytes < 0:
		return &Error{Field: "evidence.kernelLogBytes", Reason: fmt.Sprintf("%d is negative", e.KernelLogBytes)}
	case e.ServiceLogBytes < 0:
		return &Error{Field: "evidence.serviceLogBytes", Reason: fmt.Sprintf("%d is negative", e.ServiceLogBytes)}
	case e.MaxDirBytes < least:
		return &Error{Field: "evidence.maxDirBytes", Reason: fmt.Sprintf("%d is below the least, %d", e.MaxDirBytes, least)}
	case e.MaxTotalBytes < e.MaxDirBytes:
		return &Error{Field: "evidence.maxTotalBytes", Reason: fmt.Sprintf("%d is below evidence.maxDirBytes, %d: not one capture would fit", e.MaxTotalBytes, e.MaxDirBytes)}
	case e.TopProcesses < 0:
		return &Error{Field: "evidence.topProcesses", Reason: fmt.Sprintf("%d is negative", e.TopProcesses)}
	case e.Timeout.Duration <= 0:
		return &Error{Field: "evidence.timeout", Reason: fmt.Sprintf("%v must be above zero", e.Timeout)}
	case e.QueueSize <= 0:
		return &Error{Field: "evidence.queueSize", Reason: fmt.Sprintf("%d must be above zero", e.QueueSize)}
	}
	return nil
}
