package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/config"
)

// FuzzLoad feeds arbitrary bytes to Load as a config file: it must not panic,
// and must return either a valid config or one *config.Error on one line
// naming the file.
func FuzzLoad(f *testing.F) {
	for _, tc := range badConfigs {
		f.Add([]byte(tc.yaml))
	}
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range append(seeds, filepath.Join("..", "..", "deploy", "base", "config.yaml")) {
		b, err := os.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path, all.Registry)
		if err == nil {
			if cfg == nil {
				t.Fatal("Load returned neither a config nor an error")
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Load accepted a config that Validate rejects: %v", err)
			}
			return
		}
		if cfg != nil {
			t.Errorf("Load returned a config with its error %v", err)
		}
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Fatalf("error is %T, want *config.Error: %v", err, err)
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "\r\n") {
			t.Errorf("error is more than one line: %q", msg)
		}
		if ce.File != path || !strings.HasPrefix(msg, "config "+path) {
			t.Errorf("error does not name the file: %q", msg)
		}
		if lines := yamlLines(data); ce.Line < 0 || ce.Line > lines+1 {
			t.Errorf("error names line %d of a %d-line file: %q", ce.Line, lines, msg)
		}
	})
}

// yamlLines counts the lines of data as YAML does, where a carriage return
// alone, NEL, LS and PS break lines too. It may count a CR LF pair twice,
// which is fine for an upper bound.
func yamlLines(data []byte) int {
	n := 1
	for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		n += bytes.Count(data, []byte(brk))
	}
	return n
}
