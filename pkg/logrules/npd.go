package logrules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// npdMonitor is the part of a node-problem-detector system-log-monitor file
// (kernel-monitor.json and the like) that nodeguard reads.
type npdMonitor struct {
	Plugin     string `json:"plugin"`
	Source     string `json:"source"`
	Conditions []struct {
		Type    string `json:"type"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"conditions"`
	Rules []struct {
		Type      string `json:"type"`
		Condition string `json:"condition"`
		Reason    string `json:"reason"`
		Pattern   string `json:"pattern"`
	} `json:"rules"`
}

// LoadNPD reads a node-problem-detector log monitor file and turns it into
// rules: "temporary" rules become events, "permanent" ones conditions.
//
// NPD matches a pattern against the end of a buffer of recent lines joined
// by newlines. nodeguard keeps no such buffer: a single-line pattern is
// matched at the end of the line, and a multi-line pattern by its last line,
// the one that completes the report, which is where nodeguard reports too.
func LoadNPD(path string) ([]Rule, []finding.ConditionDefault, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading NPD rules: %w", err)
	}
	return ParseNPD(path, data)
}

// ParseNPD is LoadNPD on data already read; name labels errors.
func ParseNPD(name string, data []byte) ([]Rule, []finding.ConditionDefault, error) {
	var m npdMonitor
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, nil, fmt.Errorf("NPD rules %s: not a log monitor config: %w", name, err)
	}
	switch m.Plugin {
	case "kmsg", "filelog", "":
	case "journald":
		return nil, nil, fmt.Errorf("NPD rules %s: field plugin: journald monitors (kubelet, runtime units) are not kernel log rules; write them as checks.journald rules", name)
	case "custom":
		return nil, nil, fmt.Errorf("NPD rules %s: field plugin: a custom plugin monitor runs programs, it holds no log rules: give it to checks.plugins.files (--npd-rules tells the two kinds apart)", name)
	default:
		return nil, nil, fmt.Errorf("NPD rules %s: field plugin: %q is not a log monitor plugin", name, m.Plugin)
	}
	var conds []finding.ConditionDefault
	declared := map[string]bool{}
	for i, c := range m.Conditions {
		if c.Type == "" || c.Reason == "" {
			return nil, nil, fmt.Errorf("NPD rules %s: conditions[%d]: type and reason are required", name, i)
		}
		conds = append(conds, finding.ConditionDefault{Type: c.Type, Reason: c.Reason, Message: c.Message})
		declared[c.Type] = true
	}
	var rules []Rule
	for i, r := range m.Rules {
		field := func(f string) string { return fmt.Sprintf("NPD rules %s: rules[%d].%s", name, i, f) }
		pattern := r.Pattern
		if nl := strings.LastIndex(pattern, `\n`); nl >= 0 {
			pattern = pattern[nl+2:]
		}
		if pattern == "" {
			return nil, nil, fmt.Errorf("%s: empty pattern", field("pattern"))
		}
		rule := Rule{
			Name:    fmt.Sprintf("npd-%d-%s", i, r.Reason),
			Source:  "kmsg",
			Reason:  r.Reason,
			Pattern: "(?:" + pattern + `)$`,
		}
		switch r.Type {
		case "temporary":
			rule.Kind = finding.KindEvent
		case "permanent":
			rule.Kind = finding.KindCondition
			rule.Condition = r.Condition
			if !declared[r.Condition] {
				return nil, nil, fmt.Errorf("%s: condition %q is not among the file's conditions", field("condition"), r.Condition)
			}
		default:
			return nil, nil, fmt.Errorf("%s: %q is neither temporary nor permanent", field("type"), r.Type)
		}
		if _, err := compile(i, rule); err != nil {
			return nil, nil, fmt.Errorf("NPD rules %s: rules[%d]: %w", name, i, err)
		}
		rules = append(rules, rule)
	}
	return rules, conds, nil
}

// AddNPD merges rules read from NPD files into a rule set, after the others
// so that where both describe a line the built-in rule, which knows more
// kernel versions and attributes OOM kills, makes the finding (see
// sameProblem). Condition types already declared keep their healthy state.
func AddNPD(rules []Rule, conds []finding.ConditionDefault, npdRules []Rule, npdConds []finding.ConditionDefault) ([]Rule, []finding.ConditionDefault) {
	rules = append(rules, npdRules...)
	have := map[string]bool{}
	for _, c := range conds {
		have[c.Type] = true
	}
	for _, c := range npdConds {
		if !have[c.Type] {
			conds = append(conds, c)
			have[c.Type] = true
		}
	}
	return rules, conds
}
