package plugins

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"time"

	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/nodeguard/nodeguard/pkg/fieldcheck"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Monitor is one node-problem-detector custom plugin monitor, in the schema
// of NPD's custom-plugin-monitor.json, field for field, so that a file
// written for NPD runs here as it is. Inline monitors in the config file
// take the same fields.
type Monitor struct {
	// Plugin is "custom": what tells a custom plugin monitor from NPD's log
	// monitors (kmsg, filelog, journald). Inline monitors may leave it out.
	Plugin       string       `json:"plugin,omitempty"`
	PluginConfig PluginConfig `json:"pluginConfig"`
	// Source is the monitor's name in NPD's events; here it names the
	// monitor in logs and metrics.
	Source string `json:"source,omitempty"`
	// MetricsReporting is NPD's switch for its problem metrics. nodeguard
	// counts every event and condition in its own metrics whatever it says.
	MetricsReporting *bool `json:"metricsReporting,omitempty"`
	// Conditions are the condition types the rules set, with their healthy
	// reason and message.
	Conditions []finding.ConditionDefault `json:"conditions,omitempty"`
	Rules      []Rule                     `json:"rules"`
}

// PluginConfig is a monitor's settings for all its rules. Unset fields take
// NPD's defaults.
type PluginConfig struct {
	InvokeInterval  *finding.Duration `json:"invoke_interval,omitempty"`
	Timeout         *finding.Duration `json:"timeout,omitempty"`
	MaxOutputLength *int              `json:"max_output_length,omitempty"`
	Concurrency     *int              `json:"concurrency,omitempty"`
	// EnableMessageChangeBasedConditionUpdate rewrites a True condition
	// when only the plugin's message changed; by default it keeps the
	// message it turned True with.
	EnableMessageChangeBasedConditionUpdate *bool `json:"enable_message_change_based_condition_update,omitempty"`
	// SkipInitialStatus is NPD's way of not resetting conditions at start.
	// nodeguard never resets them (a condition True on the Node stays True
	// until a plugin says otherwise), so it is read and changes nothing.
	SkipInitialStatus *bool `json:"skip_initial_status,omitempty"`
}

// Rule is one plugin: a program, run every interval, whose exit status
// says whether there is a problem.
type Rule struct {
	// Type is "temporary" (a problem is an event) or "permanent" (it sets
	// Condition).
	Type      string   `json:"type"`
	Condition string   `json:"condition,omitempty"`
	Reason    string   `json:"reason"`
	Path      string   `json:"path"`
	Args      []string `json:"args,omitempty"`
	// Timeout and InvokeInterval override the monitor's for this rule.
	Timeout        *finding.Duration `json:"timeout,omitempty"`
	InvokeInterval *finding.Duration `json:"invoke_interval,omitempty"`
}

// The rule types, as NPD spells them.
const (
	temporary = "temporary"
	permanent = "permanent"
)

// NPD's defaults for what a monitor's pluginConfig leaves out
// (pkg/custompluginmonitor/types/config.go).
const (
	defaultInvokeInterval  = 30 * time.Second
	defaultTimeout         = 5 * time.Second
	defaultMaxOutputLength = 80
	defaultConcurrency     = 3
)

// minInterval keeps a typo ("1ms") from forking a process a millisecond.
const minInterval = 100 * time.Millisecond

func durationOr(d *finding.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

func intOr(v *int, def int) int {
	if v == nil {
		return def
	}
	return *v
}

func (m *Monitor) interval() time.Duration {
	return durationOr(m.PluginConfig.InvokeInterval, defaultInvokeInterval)
}
func (m *Monitor) timeout() time.Duration { return durationOr(m.PluginConfig.Timeout, defaultTimeout) }
func (m *Monitor) maxOutput() int {
	return intOr(m.PluginConfig.MaxOutputLength, defaultMaxOutputLength)
}
func (m *Monitor) concurrency() int { return intOr(m.PluginConfig.Concurrency, defaultConcurrency) }
func (m *Monitor) messageChanges() bool {
	return m.PluginConfig.EnableMessageChangeBasedConditionUpdate != nil && *m.PluginConfig.EnableMessageChangeBasedConditionUpdate
}

// ruleInterval and ruleTimeout are a rule's own settings, else its
// monitor's.
func (m *Monitor) ruleInterval(r Rule) time.Duration {
	return durationOr(r.InvokeInterval, m.interval())
}
func (m *Monitor) ruleTimeout(r Rule) time.Duration { return durationOr(r.Timeout, m.timeout()) }

// Validate checks what NPD checks, and what would make NPD hang or panic
// (concurrency 0, a negative output length), naming the field. It does not
// require the plugins to exist: a missing one is reported when it is run,
// as the problem of one rule, not of the agent.
func (m *Monitor) Validate() error {
	bad := func(field string, value any, reason string) error {
		return &finding.FieldError{Field: field, Value: value, Reason: reason}
	}
	if m.Plugin != "" && m.Plugin != "custom" {
		return bad("plugin", m.Plugin, notCustom(m.Plugin))
	}
	pc := m.PluginConfig
	switch {
	case pc.InvokeInterval != nil && pc.InvokeInterval.Duration < minInterval:
		return bad("pluginConfig.invoke_interval", pc.InvokeInterval, "must be at least "+minInterval.String())
	case pc.Timeout != nil && pc.Timeout.Duration <= 0:
		return bad("pluginConfig.timeout", pc.Timeout, "must be above zero")
	case pc.MaxOutputLength != nil && *pc.MaxOutputLength < 0:
		return bad("pluginConfig.max_output_length", *pc.MaxOutputLength, "must be zero or more")
	case pc.Concurrency != nil && *pc.Concurrency < 1:
		return bad("pluginConfig.concurrency", *pc.Concurrency, "must be at least 1: no plugin would ever run")
	}
	declared := map[string]bool{}
	for i, c := range m.Conditions {
		field := "conditions[" + strconv.Itoa(i) + "]"
		switch {
		case c.Type == "":
			return bad(field+".type", c.Type, "a condition needs a type")
		case c.Reason == "":
			return bad(field+".reason", c.Reason, "a condition needs its healthy reason")
		case declared[c.Type]:
			return bad(field+".type", c.Type, "declared twice")
		}
		declared[c.Type] = true
	}
	for i, r := range m.Rules {
		field := func(f string) string { return "rules[" + strconv.Itoa(i) + "]." + f }
		switch {
		case r.Type != temporary && r.Type != permanent:
			return bad(field("type"), r.Type, `neither "temporary" (an event) nor "permanent" (a condition)`)
		case r.Reason == "":
			return bad(field("reason"), r.Reason, "a rule needs a reason")
		case r.Path == "":
			return bad(field("path"), r.Path, "a rule needs the plugin's path")
		case r.Type == permanent && r.Condition == "":
			return bad(field("condition"), r.Condition, "a permanent rule names the condition it sets")
		case r.Type == permanent && !declared[r.Condition]:
			return bad(field("condition"), r.Condition, "not among the monitor's conditions, which give its healthy reason and message")
		case r.InvokeInterval != nil && r.InvokeInterval.Duration < minInterval:
			return bad(field("invoke_interval"), r.InvokeInterval, "must be at least "+minInterval.String())
		case r.Timeout != nil && r.Timeout.Duration <= 0:
			return bad(field("timeout"), r.Timeout, "must be above zero")
		case r.Timeout != nil && r.Timeout.Duration > m.timeout():
			return bad(field("timeout"), r.Timeout, fmt.Sprintf("is longer than the monitor's timeout, %s (pluginConfig.timeout)", m.timeout()))
		}
	}
	return nil
}

// notCustom says where a node-problem-detector file that is no custom
// plugin monitor goes.
func notCustom(plugin string) string {
	switch plugin {
	case "kmsg", "filelog":
		return fmt.Sprintf("%q is a system log monitor: its rules are log rules, for checks.kmsg.npdRules (--npd-rules tells the two kinds apart)", plugin)
	case "journald":
		return `"journald" is a system log monitor of service logs: write its rules as checks.journald rules`
	}
	return fmt.Sprintf("%q is not \"custom\", the only plugin a custom plugin monitor has", plugin)
}

// LoadFile reads an NPD custom plugin monitor file. Its errors name the
// file, the line and the field: "f.json:12: field rules[0].timeout: ...".
func LoadFile(path string) (*Monitor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the custom plugin monitor: %w", err)
	}
	return ParseFile(path, data)
}

// ParseFile is LoadFile on data already read; name labels errors. The file
// must be JSON, as NPD reads it, and its plugin "custom".
func ParseFile(name string, data []byte) (*Monitor, error) {
	fail := func(line int, field, reason string) error {
		return &fieldcheck.Error{File: name, Line: line, Field: field, Reason: reason}
	}
	var syntax *json.SyntaxError
	if err := json.Unmarshal(data, new(any)); errors.As(err, &syntax) {
		return nil, fail(lineAt(data, syntax.Offset), "", "not valid JSON: "+syntax.Error())
	} else if err != nil {
		return nil, fail(0, "", "not valid JSON: "+err.Error())
	}
	// The same text as a YAML tree, for the lines encoding/json does not
	// give.
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return nil, fail(0, "", fmt.Sprintf("cannot be read for its lines: %v", err))
	}
	root := doc.Content[0]
	if ferr := (fieldcheck.Walker{}).Check(root, reflect.TypeFor[Monitor](), ""); ferr != nil {
		ferr.File = name
		return nil, ferr
	}
	var m Monitor
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fail(0, "", err.Error())
	}
	if m.Plugin != "custom" {
		return nil, fail(fieldcheck.LineOf(root, "plugin"), "plugin", notCustom(m.Plugin))
	}
	if err := m.Validate(); err != nil {
		var fe *finding.FieldError
		if errors.As(err, &fe) {
			return nil, fail(fieldcheck.LineOf(root, fe.Field), fe.Field, fmt.Sprintf("%s (value %v)", fe.Reason, fe.Value))
		}
		return nil, fail(0, "", err.Error())
	}
	return &m, nil
}

// lineAt is the line, counted from 1, holding byte offset off of data.
func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// IsCustomPluginFile says whether the node-problem-detector file at path is
// a custom plugin monitor (its plugin is "custom"), as against a system log
// monitor. A file that cannot be read or is not JSON is not one: the log
// monitor loader then says what is wrong with it.
func IsCustomPluginFile(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var head struct {
		Plugin string `json:"plugin"`
	}
	return json.Unmarshal(data, &head) == nil && head.Plugin == "custom"
}

// catalogDefault is nodeguard's own healthy default for a condition type
// that one of its checks also raises (a file declaring KubeletUnhealthy or
// FrequentUnregisterNetDevice), so that two owners never disagree on the
// healthy reason and flip it back and forth on the Node.
func catalogDefault(c finding.ConditionDefault) finding.ConditionDefault {
	cat := finding.Catalog()
	if i := slices.IndexFunc(cat, func(d finding.ConditionDefault) bool { return d.Type == c.Type }); i >= 0 {
		return cat[i]
	}
	return c
}
