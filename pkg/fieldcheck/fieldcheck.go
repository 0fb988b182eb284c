// Package fieldcheck walks a parsed YAML document (JSON is YAML too) beside
// the Go type it will decode into, and names the line and dotted field of
// the first unknown field or ill-typed value. encoding/json, which decodes
// nodeguard's config and the node-problem-detector files it reads, says
// neither where nor, for nested fields, which field; this is the one place
// that knows how to say both, for the config file and for the rule and
// plugin files it names.
package fieldcheck

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Error is a mistake at one place of a document: the file when the caller
// names it, the line, counted from 1 (0 when not known), the field's dotted
// path and what is wrong.
type Error struct {
	File   string
	Line   int
	Field  string
	Reason string
}

// Error reads "FILE:LINE: field F: reason", leaving out what is not known.
func (e *Error) Error() string {
	where := e.File
	switch {
	case e.Line > 0 && where != "":
		where += ":" + strconv.Itoa(e.Line)
	case e.Line > 0:
		where = "line " + strconv.Itoa(e.Line)
	}
	if where != "" {
		where += ": "
	}
	if e.Field == "" {
		return where + e.Reason
	}
	return where + "field " + e.Field + ": " + e.Reason
}

var (
	durationType = reflect.TypeFor[finding.Duration]()
	rawType      = reflect.TypeFor[json.RawMessage]()
)

// Walker checks a node against a type. Special takes over the fields at the
// dotted paths it names (the config file's checks section, whose shape
// depends on the registry), checking their value in place of the walk.
type Walker struct {
	Special map[string]func(n *yamlv3.Node) *Error
}

// Check walks n beside type t; path is the dotted path of n ("" for the
// document's root).
func (w Walker) Check(n *yamlv3.Node, t reflect.Type, path string) *Error {
	return w.check(n, t, dotted(path))
}

// dotted gives path the leading dot the walk joins fields with.
func dotted(path string) string {
	if path == "" || strings.HasPrefix(path, ".") {
		return path
	}
	return "." + path
}

func (w Walker) check(n *yamlv3.Node, t reflect.Type, path string) *Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	line := n.Line // an alias's own line, not its anchor's
	if n.Kind == yamlv3.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		return nil
	}
	bad := func(reason string) *Error {
		return &Error{Line: line, Field: strings.TrimPrefix(path, "."), Reason: reason}
	}
	switch {
	case t == durationType:
		if n.Kind != yamlv3.ScalarNode {
			return bad("want a duration such as \"30s\" or \"5m\"")
		}
		if _, err := finding.ParseDuration(n.Value); err != nil {
			return bad(err.Error())
		}
		if n.Tag != "!!str" && n.Tag != "!" {
			// A bare 0 parses as a duration but decodes as a number, which
			// finding.Duration does not take.
			return bad(fmt.Sprintf("%s is a number; write a duration with its unit, such as \"0s\" or \"5m\"", n.Value))
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yamlv3.MappingNode {
			return bad("want a mapping of fields")
		}
		fields := JSONFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			f, ok := fields[key.Value]
			if !ok {
				return &Error{Line: key.Line, Field: strings.TrimPrefix(path+"."+key.Value, "."),
					Reason: fmt.Sprintf("unknown field; known fields here: %s", strings.Join(sortedKeys(fields), ", "))}
			}
			if special := w.Special[strings.TrimPrefix(path+"."+key.Value, ".")]; special != nil {
				if err := special(val); err != nil {
					return err
				}
				continue
			}
			if err := w.check(val, f.Type, path+"."+key.Value); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice && t != rawType:
		if n.Kind != yamlv3.SequenceNode {
			return bad("want a list")
		}
		for i, item := range n.Content {
			if err := w.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		if n.Kind != yamlv3.MappingNode {
			return bad("want a mapping")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := w.check(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yamlv3.ScalarNode {
		return bad(fmt.Sprintf("want a single %s value", t.Kind()))
	}
	switch t.Kind() {
	case reflect.Bool:
		if _, err := strconv.ParseBool(n.Value); err != nil || n.Tag != "!!bool" {
			return bad(fmt.Sprintf("%q is not true or false", n.Value))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		// The decoded value must be the decimal one the user sees: YAML reads
		// 017 as octal 15 and "10" as a string.
		want, err := strconv.ParseInt(n.Value, 10, t.Bits())
		var got int64
		if err != nil || n.Tag != "!!int" || n.Decode(&got) != nil || got != want {
			return bad(notNumber(n, "a whole number"))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		want, err := strconv.ParseUint(n.Value, 10, t.Bits())
		var got uint64
		if err != nil || n.Tag != "!!int" || n.Decode(&got) != nil || got != want {
			return bad(notNumber(n, "a whole number, zero or more"))
		}
	case reflect.Float32, reflect.Float64:
		want, err := strconv.ParseFloat(n.Value, 64)
		var got float64
		if err != nil || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&got) != nil || got != want {
			return bad(notNumber(n, "a number"))
		}
	case reflect.String:
		if n.Tag != "!!str" {
			return bad(fmt.Sprintf("%s is not a string; quote it", n.Value))
		}
	}
	return nil
}

// notNumber says why a scalar is not the number a field wants.
func notNumber(n *yamlv3.Node, want string) string {
	if n.Tag == "!!str" && n.Style&(yamlv3.SingleQuotedStyle|yamlv3.DoubleQuotedStyle) != 0 {
		return fmt.Sprintf("%q is quoted, so it is a string; want %s without quotes", n.Value, want)
	}
	if n.Tag == "!!int" {
		return fmt.Sprintf("%q is not %s in plain decimal digits", n.Value, want)
	}
	return fmt.Sprintf("%q is not %s", n.Value, want)
}

// JSONFields maps each JSON field name of a struct to its field, following
// embedded structs as encoding/json does.
func JSONFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range JSONFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func sortedKeys(m map[string]reflect.StructField) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// LineOf finds the line of a dotted field path such as
// "checks.kmsg.rules[1].pattern"; 0 when the path is not in the document.
// A path that leaves the document part way gives the line of the last part
// found.
func LineOf(root *yamlv3.Node, path string) int {
	n := root
	line := 0
	for part := range strings.SplitSeq(path, ".") {
		name, idx := part, -1
		if open := strings.IndexByte(part, '['); open >= 0 && strings.HasSuffix(part, "]") {
			name = part[:open]
			if v, err := strconv.Atoi(part[open+1 : len(part)-1]); err == nil {
				idx = v
			}
		}
		if n == nil || n.Kind != yamlv3.MappingNode {
			return line
		}
		var next *yamlv3.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				line, next = n.Content[i].Line, n.Content[i+1]
				break
			}
		}
		if next == nil {
			return line
		}
		if idx >= 0 {
			if next.Kind != yamlv3.SequenceNode || idx >= len(next.Content) {
				return line
			}
			next = next.Content[idx]
			line = next.Line
		}
		n = next
	}
	return line
}
