package logrules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Expectation is what one log file of a corpus must make, in the format of
// the team's corpora (expect.json): reasons (events) or condition types
// that must be reported, ones that may be, exact counts, and substrings
// that some message of a name must hold.
type Expectation struct {
	Required []string            `json:"required"`
	Optional []string            `json:"optional,omitempty"`
	Counts   map[string]int      `json:"counts,omitempty"`
	Contains map[string][]string `json:"contains,omitempty"`
}

// Expectations are a corpus's, by log file name.
type Expectations map[string]Expectation

// ExpectError is a bad expectations file: where, and what is wrong.
type ExpectError struct {
	File  string
	Line  int
	Entry string // the log file's key; "" for the file as a whole
	Field string
	Err   error
}

func (e *ExpectError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "expect %s", e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Entry != "" {
		fmt.Fprintf(&b, ": entry %q", e.Entry)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %s", e.Field)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *ExpectError) Unwrap() error { return e.Err }

// LoadExpectations reads an expectations file. Keys that start with "_"
// are comments, as the corpus tools read them; any other unknown key, a
// negative count or an empty name is an *ExpectError naming its line.
func LoadExpectations(path string) (Expectations, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading expectations: %w", err)
	}
	return ParseExpectations(path, raw)
}

// ParseExpectations is LoadExpectations of raw, read from path.
func ParseExpectations(path string, raw []byte) (Expectations, error) {
	bad := func(offset int64, entry, field string, err error) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("the file ends inside the object: %w", err)
		}
		return &ExpectError{File: path, Line: lineAt(raw, offset), Entry: entry, Field: field, Err: err}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, bad(dec.InputOffset(), "", "", errors.New("want a JSON object of log file names"))
	}
	out := Expectations{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad(syntaxOffset(err, dec.InputOffset()), "", "", err)
		}
		name := tok.(string)
		var v json.RawMessage
		at := dec.InputOffset()
		if err := dec.Decode(&v); err != nil {
			return nil, bad(syntaxOffset(err, dec.InputOffset()), name, "", err)
		}
		if strings.HasPrefix(name, "_") {
			continue
		}
		// The value begins after the key's colon and any space.
		at += int64(len(raw[at:]) - len(bytes.TrimLeft(raw[at:], " \t\r\n:")))
		e, field, off, err := decodeExpectation(v)
		if err != nil {
			return nil, bad(at+off, name, field, err)
		}
		if _, dup := out[name]; dup {
			return nil, bad(at, name, "", errors.New("named twice"))
		}
		out[name] = e
	}
	if _, err := dec.Token(); err != nil {
		return nil, bad(syntaxOffset(err, dec.InputOffset()), "", "", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad(dec.InputOffset(), "", "", errors.New("more after the object"))
	}
	return out, nil
}

// decodeExpectation decodes one entry and checks it, returning the field at
// fault and its offset within v.
func decodeExpectation(v json.RawMessage) (Expectation, string, int64, error) {
	var e Expectation
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return e, te.Field, te.Offset, fmt.Errorf("is %s, want %s", te.Value, jsonKind(te.Type.String()))
		}
		// encoding/json names an unknown key only in its text.
		if key, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			field := strings.Trim(key, `"`)
			return e, field, int64(bytes.Index(v, []byte(key))), errors.New("is not one of required, optional, counts, contains")
		}
		return e, "", syntaxOffset(err, 0), err
	}
	names := func(field string, list []string) (string, int64, error) {
		for i, n := range list {
			if n == "" {
				return fmt.Sprintf("%s[%d]", field, i), fieldOffset(v, field), errors.New("an empty name")
			}
		}
		return "", 0, nil
	}
	for _, f := range []struct {
		field string
		list  []string
	}{{"required", e.Required}, {"optional", e.Optional}} {
		if field, off, err := names(f.field, f.list); err != nil {
			return e, field, off, err
		}
	}
	for k, n := range e.Counts {
		if n < 0 {
			return e, "counts." + k, fieldOffset(v, "counts"), fmt.Errorf("%d is negative", n)
		}
	}
	return e, "", 0, nil
}

func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "an object"
	case goType == "int":
		return "a whole number"
	}
	return "a string"
}

func fieldOffset(v []byte, field string) int64 {
	if i := bytes.Index(v, []byte(`"`+field+`"`)); i >= 0 {
		return int64(i)
	}
	return 0
}

// syntaxOffset is where a JSON syntax error is; other errors (a file cut
// short) are at fallback.
func syntaxOffset(err error, fallback int64) int64 {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return se.Offset
	}
	return fallback
}

// lineAt is the 1-based line of raw that offset falls on.
func lineAt(raw []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(raw)))
	return bytes.Count(raw[:offset], []byte{'\n'}) + 1
}

// Merge adds more's expectations to e: the required, optional and contains
// lists of an entry in both are joined, and more's counts win. It lets a
// project add expectations to a corpus it may not write to.
func (e Expectations) Merge(more Expectations) {
	for name, m := range more {
		have, ok := e[name]
		if !ok {
			e[name] = m
			continue
		}
		have.Required = appendNew(have.Required, m.Required...)
		have.Optional = appendNew(have.Optional, m.Optional...)
		for k, n := range m.Counts {
			if have.Counts == nil {
				have.Counts = map[string]int{}
			}
			have.Counts[k] = n
		}
		for k, subs := range m.Contains {
			if have.Contains == nil {
				have.Contains = map[string][]string{}
			}
			have.Contains[k] = appendNew(have.Contains[k], subs...)
		}
		e[name] = have
	}
}

func appendNew(list []string, more ...string) []string {
	for _, s := range more {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// Names returns the entries' names, sorted.
func (e Expectations) Names() []string {
	return sortedKeys(e)
}

// Judge says what is wrong with found against spec, the way the corpus
// tools (score-replay) judge: an event counts under its reason, a condition
// under its type while its status is True (a missing status counts as
// True); names neither required nor optional are false positives; counts
// are exact; each contains substring must be in some message of that
// name. Nothing wrong is an empty list.
func Judge(spec Expectation, found []finding.Finding) []string {
	names := map[string]int{}
	messages := map[string][]string{}
	for _, f := range found {
		var name string
		if f.Kind == finding.KindCondition {
			if f.Status != "" && f.Status != finding.StatusTrue {
				continue
			}
			name = f.Type
		} else {
			name = f.Reason
		}
		names[name]++
		messages[name] = append(messages[name], f.Message)
	}
	var why, missing, extra []string
	for _, r := range spec.Required {
		if names[r] == 0 {
			missing = append(missing, r)
		}
	}
	for name, n := range names {
		if !slices.Contains(spec.Required, name) && !slices.Contains(spec.Optional, name) {
			extra = append(extra, fmt.Sprintf("%sx%d", name, n))
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		why = append(why, "missing "+strings.Join(missing, ","))
	}
	if len(extra) > 0 {
		why = append(why, "unexpected "+strings.Join(extra, ","))
	}
	for _, k := range sortedKeys(spec.Counts) {
		if names[k] != spec.Counts[k] {
			why = append(why, fmt.Sprintf("%s: %d found, %d expected", k, names[k], spec.Counts[k]))
		}
	}
	for _, k := range sortedKeys(spec.Contains) {
		for _, sub := range spec.Contains[k] {
			if !slices.ContainsFunc(messages[k], func(m string) bool { return strings.Contains(m, sub) }) {
				why = append(why, fmt.Sprintf("%s: no message holds %q", k, sub))
			}
		}
	}
	return why
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
