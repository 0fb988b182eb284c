package logrules

import (
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Rule says which lines make which finding. Rules are data: the engine has
// none of its own; a check brings its built-in ones (the kernel's are in
// pkg/logrules/kernelrules), and users add, replace or disable rules in the
// config file.
type Rule struct {
	// Name identifies the rule; a user rule with a default rule's name
	// replaces it.
	Name string `json:"name"`
	// Source is where the rule reads: "kmsg" (the default), "journald:UNIT"
	// or "file:PATH".
	Source string       `json:"source,omitempty"`
	Kind   finding.Kind `json:"kind"`
	Reason string       `json:"reason"`
	// Condition is the condition type a condition rule sets True.
	Condition string `json:"condition,omitempty"`
	// Contains is a literal every matching line holds; lines without it are
	// passed over before the pattern runs, which keeps the cost of a benign
	// line near zero. When empty it is derived from the pattern.
	Contains string `json:"contains"`
	// Pattern is a Go regular expression the line must match.
	Pattern string `json:"pattern"`
	// Exclude, when set, is a pattern that vetoes a match (e.g. veth devices
	// for NIC link rules).
	Exclude string `json:"exclude,omitempty"`
	// Group folds the lines of one multi-line report into one finding: after
	// a rule of a group matches, further matches of that group within
	// GroupWindow of log time, or before an end-of-report marker, are part of
	// the same report.
	Group string `json:"group,omitempty"`
	// MinCount and Window: the rule fires only when it has matched MinCount
	// times within Window of log time.
	MinCount int              `json:"minCount,omitempty"`
	Window   finding.Duration `json:"window,omitempty"`
	// ClearAfter sets a condition False again after this long without a
	// match; zero keeps it True until the agent sees a new boot.
	ClearAfter finding.Duration `json:"clearAfter,omitempty"`
	// Attribute names extra work done on a match: "oom" adds the killed
	// task's memory cgroup, pod UID and container ID.
	Attribute string `json:"attribute,omitempty"`
	// Details are facts that the lines after a match tell about it, such as
	// the task and function an oops names a line or two below its first.
	// A rule with details begins a report: its finding, and whatever else
	// its line made, waits until the report ends (see Engine) and then says
	// the first line followed by each detail found, in this order.
	Details []Detail `json:"details,omitempty"`
}

// Detail is one fact a report's later lines may hold: the first Max lines
// of the report that contain Contains and match Pattern (and not Exclude)
// each give Format expanded with Pattern's submatches, and the message
// names them after Label.
type Detail struct {
	Label    string `json:"label"`
	Contains string `json:"contains,omitempty"`
	Pattern  string `json:"pattern"`
	Exclude  string `json:"exclude,omitempty"`
	// Format is a regexp.Expand template ("$1", "${comm} pid ${pid}");
	// empty takes the first submatch. Runs of white space in the result are
	// made one space: the kernel pads its columns.
	Format string `json:"format,omitempty"`
	// Max is how many lines may give the fact (stack frames: a few);
	// zero means one.
	Max int `json:"max,omitempty"`
}

// maxDetailValues bounds Max, and with it what one report may add to a
// message.
const maxDetailValues = 16

// RuleError is a bad rule: which rule and which field.
type RuleError struct {
	Index int
	Name  string
	Field string
	Value string
	Err   string
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("rule %d (%q): field %s: %s (value %q)", e.Index, e.Name, e.Field, e.Err, e.Value)
}

type compiled struct {
	Rule
	re      *regexp.Regexp
	exclude *regexp.Regexp
	details []compiledDetail
	// derived are the sets of literals the pattern itself requires, one
	// of each; pre, set by Compile, what a line must hold before re runs.
	derived [][]literal
	pre     prefilter
	// branches, when the pattern is an alternation, are its branches,
	// each with its own prefilter: see splitBranches.
	branches []branch
}

// matches reports whether the line, holding the literals h, matches the
// rule's pattern.
func (c *compiled) matches(text string, h hits) bool {
	if c.branches == nil {
		return c.re.MatchString(text)
	}
	for i := range c.branches {
		b := &c.branches[i]
		if b.pre.pass(h) && b.re.MatchString(text) {
			return true
		}
	}
	return false
}

type compiledDetail struct {
	Detail
	re      *regexp.Regexp
	exclude *regexp.Regexp
	derived [][]literal
	pre     prefilter
}

// compile checks a rule and compiles its patterns.
func compile(i int, r Rule) (*compiled, error) {
	bad := func(field, value, msg string) error {
		return &RuleError{Index: i, Name: r.Name, Field: field, Value: value, Err: msg}
	}
	if r.Name == "" {
		return nil, bad("name", "", "a rule needs a name")
	}
	switch r.Kind {
	case finding.KindEvent:
		if r.Condition != "" {
			return nil, bad("condition", r.Condition, "an event rule sets no condition; use kind: condition")
		}
	case finding.KindCondition:
		if r.Condition == "" {
			return nil, bad("condition", "", "a condition rule needs the condition type it sets")
		}
	default:
		return nil, bad("kind", string(r.Kind), `must be "event" or "condition"`)
	}
	if r.Reason == "" {
		return nil, bad("reason", "", "a rule needs a reason")
	}
	if r.Pattern == "" {
		return nil, bad("pattern", "", "a rule needs a pattern")
	}
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return nil, bad("pattern", r.Pattern, err.Error())
	}
	if r.Contains == "" {
		// Derive the prefilter; without one the pattern runs on every line.
		r.Contains = RequiredLiteral(r.Pattern)
	}
	c := &compiled{Rule: r, re: re, derived: requiredGroups(r.Pattern), branches: splitBranches(r.Pattern)}
	if r.Exclude != "" {
		if c.exclude, err = regexp.Compile(r.Exclude); err != nil {
			return nil, bad("exclude", r.Exclude, err.Error())
		}
	}
	if r.MinCount < 0 {
		return nil, bad("minCount", fmt.Sprint(r.MinCount), "must not be negative")
	}
	if r.MinCount > 1 && r.Window.Duration <= 0 {
		return nil, bad("window", r.Window.String(), "minCount above 1 needs a window")
	}
	if r.Attribute != "" && r.Attribute != "oom" {
		return nil, bad("attribute", r.Attribute, `the only attribute is "oom"`)
	}
	if r.ClearAfter.Duration > 0 && r.Kind != finding.KindCondition {
		return nil, bad("clearAfter", r.ClearAfter.String(), "only condition rules clear")
	}
	for j, d := range r.Details {
		cd, field, value, err := compileDetail(d)
		if err != nil {
			return nil, bad(fmt.Sprintf("details[%d].%s", j, field), value, err.Error())
		}
		c.details = append(c.details, cd)
	}
	return c, nil
}

// compileDetail checks a detail and compiles its patterns; on error it names
// the field at fault and its value.
func compileDetail(d Detail) (compiledDetail, string, string, error) {
	if d.Label == "" {
		return compiledDetail{}, "label", "", errors.New("a detail needs a label, the word the message puts before it")
	}
	if d.Pattern == "" {
		return compiledDetail{}, "pattern", "", errors.New("a detail needs a pattern")
	}
	re, err := regexp.Compile(d.Pattern)
	if err != nil {
		return compiledDetail{}, "pattern", d.Pattern, err
	}
	if re.NumSubexp() == 0 {
		return compiledDetail{}, "pattern", d.Pattern, errors.New("a detail's pattern needs a (group) that captures the fact")
	}
	if d.Max < 0 || d.Max > maxDetailValues {
		return compiledDetail{}, "max", fmt.Sprint(d.Max), fmt.Errorf("must be 0 to %d", maxDetailValues)
	}
	if d.Contains == "" {
		d.Contains = RequiredLiteral(d.Pattern)
	}
	if d.Format == "" {
		d.Format = "$1"
	}
	cd := compiledDetail{Detail: d, re: re, derived: requiredGroups(d.Pattern)}
	if d.Exclude != "" {
		if cd.exclude, err = regexp.Compile(d.Exclude); err != nil {
			return compiledDetail{}, "exclude", d.Exclude, err
		}
	}
	return cd, "", "", nil
}

// prefilterOf registers, in lits, what a line must hold before a pattern
// runs: the rule's own contains, and one literal of each set its pattern
// requires; all are necessary, and contains, when given, comes first.
func prefilterOf(lits *literals, contains string, derived [][]literal) prefilter {
	var p prefilter
	if contains != "" {
		p = append(p, []int32{lits.add(literal{text: contains})})
	}
	for _, set := range derived {
		if len(set) == 1 && set[0] == (literal{text: contains}) {
			continue
		}
		group := make([]int32, len(set))
		for i, l := range set {
			group[i] = lits.add(l)
		}
		p = append(p, group)
	}
	return p
}

// Merge returns the default rules with the user's: a user rule replaces the
// default of the same name, the others are appended, and rules named in
// disable are dropped. It reports a disable that names no rule.
func Merge(defaults, user []Rule, disable []string) ([]Rule, error) {
	out := slices.Clone(defaults)
	for _, u := range user {
		if i := slices.IndexFunc(out, func(r Rule) bool { return r.Name == u.Name }); i >= 0 {
			out[i] = u
		} else {
			out = append(out, u)
		}
	}
	for _, name := range disable {
		i := slices.IndexFunc(out, func(r Rule) bool { return r.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("disableRules names %q, which is no rule", name)
		}
		out = slices.Delete(out, i, i+1)
	}
	return out, nil
}
