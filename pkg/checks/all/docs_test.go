package all_test

import (
	"encoding"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/checks/journald"
	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logrules/kernelrules"
)

// docsDir is the operator documentation, from this package's directory.
var docsDir = filepath.Join("..", "..", "..", "docs")

// TestCheckDocs keeps docs/checks/<name>.md in step with the code: each
// registered check has a page, and the page names, in backticks, every key
// of the check's config section (nested rule and file fields included),
// every condition type the check owns with its healthy reason, and, for
// the log checks, every built-in rule's name and reason (the names are what
// disableRules takes).
func TestCheckDocs(t *testing.T) {
	builtinRules := map[string][]logrules.Rule{
		kmsg.Name:     kernelrules.Rules(),
		journald.Name: journald.DefaultRules(),
	}
	for _, reg := range all.Registry {
		t.Run(reg.Name, func(t *testing.T) {
			path := filepath.Join(docsDir, "checks", reg.Name+".md")
			doc := readDoc(t, path)
			if doc == nil {
				return
			}
			// Every section takes enabled besides the check's own fields.
			keys := append([]string{"enabled"}, jsonFieldNames(reg.ConfigType)...)
			for _, key := range keys {
				if !doc.has(key) {
					t.Errorf("%s: config key `%s` of checks.%s (%v) is not documented in backticks", path, key, reg.Name, reg.ConfigType)
				}
			}

			check, err := reg.New(reg.NewConfig(), checks.Env{Log: zap.NewNop()})
			if err != nil {
				t.Logf("%s: not checking condition types: building the %s check failed on this machine: %v", path, reg.Name, err)
			} else {
				for _, c := range check.Conditions() {
					if !doc.has(c.Type) {
						t.Errorf("%s: condition type `%s`, owned by the %s check, is not documented in backticks", path, c.Type, reg.Name)
					}
					if !doc.has(c.Reason) {
						t.Errorf("%s: healthy reason `%s` of condition %s is not documented in backticks", path, c.Reason, c.Type)
					}
				}
			}

			for _, r := range builtinRules[reg.Name] {
				if !doc.has(r.Name) {
					t.Errorf("%s: built-in rule name `%s` is not documented in backticks", path, r.Name)
				}
				if !doc.has(r.Reason) {
					t.Errorf("%s: reason `%s` of built-in rule %s is not documented in backticks", path, r.Reason, r.Name)
				}
			}
		})
	}
}

// TestConfigurationDoc keeps docs/configuration.md in step with the
// top-level, reporter, remediation and evidence sections of the config
// file.
func TestConfigurationDoc(t *testing.T) {
	path := filepath.Join(docsDir, "configuration.md")
	doc := readDoc(t, path)
	if doc == nil {
		return
	}
	for _, tc := range []struct {
		section string
		typ     reflect.Type
		skip    []string // documented elsewhere
	}{
		{"top level", reflect.TypeFor[config.Config](), []string{"checks"}},
		{"reporter", reflect.TypeFor[config.ReporterConfig](), nil},
		{"reporter.reasons.REASON", reflect.TypeFor[finding.EventPolicy](), nil},
		{"remediation", reflect.TypeFor[config.RemediationConfig](), nil},
		{"remediation.restartKubelet", reflect.TypeFor[config.RestartKubeletConfig](), nil},
		{"remediation.taints[]", reflect.TypeFor[config.TaintRule](), nil},
		{"evidence", reflect.TypeFor[config.EvidenceConfig](), nil},
	} {
		t.Run(tc.section, func(t *testing.T) {
			for _, key := range ownJSONFieldNames(tc.typ) {
				if slices.Contains(tc.skip, key) {
					continue
				}
				if !doc.has(key) {
					t.Errorf("%s: %s key `%s` (%v) is not documented in backticks", path, tc.section, key, tc.typ)
				}
			}
		})
	}
}

// TestDocsIndex: docs/README.md links every page the tests above keep
// honest, and each exists.
func TestDocsIndex(t *testing.T) {
	path := filepath.Join(docsDir, "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	links := []string{"configuration.md", "troubleshooting.md", "consumers.md"}
	for _, reg := range all.Registry {
		links = append(links, "checks/"+reg.Name+".md")
	}
	for _, l := range links {
		if !strings.Contains(string(b), "("+l+")") {
			t.Errorf("%s: no link to %s", path, l)
		}
		if _, err := os.Stat(filepath.Join(docsDir, l)); err != nil {
			t.Errorf("%s links %s: %v", path, l, err)
		}
	}
}

// doc is a Markdown page's inline code spans.
type doc struct{ spans map[string]bool }

var (
	fence      = regexp.MustCompile("(?ms)^ {0,3}```.*?^ {0,3}```[ \t]*$")
	inlineCode = regexp.MustCompile("`([^`\n]+)`")
)

// readDoc reads a page and collects its inline code spans, leaving out
// fenced code blocks: a key counts as documented only where prose or a
// table names it, not only in an example.
func readDoc(t *testing.T, path string) *doc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: cannot read the page: %v", path, err)
		return nil
	}
	d := &doc{spans: map[string]bool{}}
	for _, m := range inlineCode.FindAllStringSubmatch(fence.ReplaceAllString(string(b), ""), -1) {
		d.spans[strings.TrimSpace(m[1])] = true
	}
	return d
}

// has reports whether the page names key in backticks, alone (`period`) or
// as the last part of a dotted path (`checks.nic.period`,
// `rules[].pattern`).
func (d *doc) has(key string) bool {
	if d.spans[key] {
		return true
	}
	for s := range d.spans {
		if strings.HasSuffix(s, "."+key) {
			return true
		}
	}
	return false
}

// jsonFieldNames lists the JSON keys a value of type t decodes, walking
// into embedded structs (promoted fields, as encoding/json does) and into
// nested struct, pointer, slice, array and map element types. Types that
// decode themselves (finding.Duration) are leaves.
func jsonFieldNames(t reflect.Type) []string {
	var names []string
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		t = elem(t)
		if t.Kind() != reflect.Struct || seen[t] || decodesItself(t) {
			return
		}
		seen[t] = true
		for _, f := range structFields(t) {
			if !slices.Contains(names, f.name) {
				names = append(names, f.name)
			}
			walk(f.typ)
		}
	}
	walk(t)
	return names
}

// ownJSONFieldNames lists the JSON keys of t itself, embedded structs'
// promoted fields included, but not those of nested sections.
func ownJSONFieldNames(t reflect.Type) []string {
	var names []string
	for _, f := range structFields(elem(t)) {
		names = append(names, f.name)
	}
	return names
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// structFields returns the JSON fields of struct type t: exported fields
// not tagged "-", named by their tag or else their Go name, with an
// untagged embedded struct's fields promoted in its place.
func structFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && elem(f.Type).Kind() == reflect.Struct && !decodesItself(elem(f.Type)) {
			out = append(out, structFields(elem(f.Type))...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name: name, typ: f.Type})
	}
	return out
}

// elem strips pointers, slices, arrays and maps down to the element type.
func elem(t reflect.Type) reflect.Type {
	for {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			t = t.Elem()
		default:
			return t
		}
	}
}

// decodesItself reports whether *t decodes its own JSON, so that its Go
// fields are no config keys.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(reflect.TypeFor[json.Unmarshaler]()) || p.Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// TestJSONFieldNames checks the walker itself on the shapes the configs use.
func TestJSONFieldNames(t *testing.T) {
	type inner struct {
		Deep string `json:"deep"`
	}
	type embedded struct {
		Promoted finding.Duration `json:"promoted,omitempty"`
	}
	type sample struct {
		Plain    string `json:"plain"`
		embedded        // unexported, untagged: fields promoted
		checks.ProbeSettings
		Items    []inner          `json:"items"`
		Ptr      *inner           `json:"ptr,omitempty"`
		Ignored  string           `json:"-"`
		Untagged int              // no tag: named by its Go name
		hidden   int              // unexported: no key
		When     finding.Duration `json:"when"`
	}
	_ = sample{}.hidden
	got := jsonFieldNames(reflect.TypeFor[sample]())
	want := []string{"plain", "promoted", "period", "timeout", "failureThreshold", "items", "deep", "ptr", "Untagged", "when"}
	if !slices.Equal(got, want) {
		t.Errorf("jsonFieldNames = %q, want %q", got, want)
	}
}
