package plugins

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// npdFiles are NPD's shipped custom plugin monitor files (testdata/npd,
// see the NOTICE there).
func npdFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "npd", "*.json"))
	if err != nil || len(files) < 14 {
		t.Fatalf("testdata/npd holds %d files (%v), want NPD's 14 custom plugin monitors", len(files), err)
	}
	return files
}

// TestNPDShippedFilesParse: every custom plugin monitor NPD ships reads,
// validates and builds, with the rules, conditions and settings it says,
// though none of the plugins they name is on this machine.
func TestNPDShippedFilesParse(t *testing.T) {
	for _, path := range npdFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			// What the file says, read without this package.
			var raw struct {
				PluginConfig map[string]any   `json:"pluginConfig"`
				Conditions   []map[string]any `json:"conditions"`
				Rules        []map[string]any `json:"rules"`
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &raw); err != nil {
				t.Fatal(err)
			}
			if !IsCustomPluginFile(path) {
				t.Errorf("IsCustomPluginFile(%s) = false", path)
			}
			m, err := LoadFile(path)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			if len(m.Rules) != len(raw.Rules) || len(m.Conditions) != len(raw.Conditions) {
				t.Errorf("read %d rules and %d conditions, the file has %d and %d", len(m.Rules), len(m.Conditions), len(raw.Rules), len(raw.Conditions))
			}
			if want, err := time.ParseDuration(raw.PluginConfig["invoke_interval"].(string)); err != nil || m.interval() != want {
				t.Errorf("interval %s, the file says %v", m.interval(), raw.PluginConfig["invoke_interval"])
			}
			if want := int(raw.PluginConfig["concurrency"].(float64)); m.concurrency() != want {
				t.Errorf("concurrency %d, the file says %d", m.concurrency(), want)
			}
			for i, r := range m.Rules {
				if r.Path != raw.Rules[i]["path"] || r.Reason != raw.Rules[i]["reason"] {
					t.Errorf("rules[%d] = %s %s, the file says %v %v", i, r.Path, r.Reason, raw.Rules[i]["path"], raw.Rules[i]["reason"])
				}
				if m.ruleTimeout(r) > m.timeout() {
					t.Errorf("rules[%d] timeout %s over the monitor's %s", i, m.ruleTimeout(r), m.timeout())
				}
			}
			c, err := New(&Config{Files: []string{path}}, testEnv(t))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			var types []string
			for _, d := range c.Conditions() {
				types = append(types, d.Type)
			}
			for _, rc := range raw.Conditions {
				if !slices.Contains(types, rc["type"].(string)) {
					t.Errorf("condition %v is not among the check's %v", rc["type"], types)
				}
			}
		})
	}
}

// TestCatalogTypesKeepNodeguardsDefault: a file that declares a type
// nodeguard's own checks raise gets nodeguard's healthy reason, so that the
// two owners agree.
func TestCatalogTypesKeepNodeguardsDefault(t *testing.T) {
	c, err := New(&Config{Files: []string{
		filepath.Join("testdata", "npd", "health-checker-kubelet.json"),
		filepath.Join("testdata", "npd", "kernel-monitor-counter.json"),
		filepath.Join("testdata", "npd", "custom-plugin-monitor.json"),
	}}, testEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []finding.ConditionDefault{finding.KubeletUnhealthy, finding.FrequentUnregisterNetDevice,
		{Type: "NTPProblem", Reason: "NTPIsUp", Message: "ntp service is up"}}
	if got := c.Conditions(); !slices.Equal(got, want) {
		t.Errorf("Conditions() = %v, want %v", got, want)
	}
}

// TestFileErrorsNameFileLineAndField: every mistake is reported with the
// file, the line it is on and the field.
func TestFileErrorsNameFileLineAndField(t *testing.T) {
	const good = `{
  "plugin": "custom",
  "pluginConfig": {
    "invoke_interval": "30s",
    "timeout": "5s"
  },
  "source": "s",
  "conditions": [
    {"type": "P", "reason": "PIsFine", "message": "fine"}
  ],
  "rules": [
    {"type": "permanent", "condition": "P", "reason": "PIsBad", "path": "/bin/true", "timeout": "3s"}
  ]
}`
	if _, err := ParseFile("f.json", []byte(good)); err != nil {
		t.Fatalf("the good file: %v", err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"unknown top-level field", `"source": "s",`, `"source": "s", "sauce": 1,`, `f.json:7: field sauce: unknown field`},
		{"unknown pluginConfig field", `"timeout": "5s"`, `"timeout": "5s", "invoke_intervall": "1s"`, `f.json:5: field pluginConfig.invoke_intervall: unknown field`},
		{"unknown rule field", `"timeout": "3s"}`, `"timeout": "3s", "argz": []}`, `f.json:12: field rules[0].argz: unknown field`},
		{"bad duration", `"invoke_interval": "30s"`, `"invoke_interval": "30 s"`, `f.json:4: field pluginConfig.invoke_interval: "30 s" is not a duration`},
		{"quoted number", `"timeout": "5s"`, `"timeout": "5s", "concurrency": "3"`, `f.json:5: field pluginConfig.concurrency: "3" is quoted`},
		{"zero concurrency", `"timeout": "5s"`, `"timeout": "5s", "concurrency": 0`, `f.json:5: field pluginConfig.concurrency: must be at least 1`},
		{"negative output length", `"timeout": "5s"`, `"timeout": "5s", "max_output_length": -1`, `f.json:5: field pluginConfig.max_output_length: must be zero or more`},
		{"interval too short", `"invoke_interval": "30s"`, `"invoke_interval": "1ms"`, `f.json:4: field pluginConfig.invoke_interval: must be at least 100ms`},
		{"rule timeout over the monitor's", `"timeout": "3s"}`, `"timeout": "6s"}`, `f.json:12: field rules[0].timeout: is longer than the monitor's timeout, 5s`},
		{"undeclared condition", `"condition": "P"`, `"condition": "Q"`, `f.json:12: field rules[0].condition: not among the monitor's conditions`},
		{"bad rule type", `"type": "permanent"`, `"type": "forever"`, `f.json:12: field rules[0].type: neither "temporary"`},
		{"no path", `"path": "/bin/true", `, ``, `f.json:12: field rules[0].path: a rule needs the plugin's path`},
		{"condition without reason", `"reason": "PIsFine", `, ``, `f.json:9: field conditions[0].reason: a condition needs its healthy reason`},
		{"a log monitor", `"plugin": "custom"`, `"plugin": "kmsg"`, `f.json:2: field plugin: "kmsg" is a system log monitor`},
		{"no plugin", `"plugin": "custom",`, ``, `f.json: field plugin: "" is not "custom"`},
		{"not JSON", `"source": "s",`, `"source": "s"`, `f.json:8: not valid JSON`},
		{"YAML, not JSON", good, "plugin: custom\nrules: []\n", `f.json:1: not valid JSON`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.Replace(good, tt.old, tt.new, 1)
			if data == good {
				t.Fatalf("%q is not in the good file", tt.old)
			}
			_, err := ParseFile("f.json", []byte(data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseFile = %v, want an error holding %q", err, tt.want)
			}
		})
	}
}

// TestConfigErrorsNameTheFileOrMonitor: the check's own section points at
// the file, or the inline monitor's field, that is wrong.
func TestConfigErrorsNameTheFileOrMonitor(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"plugin": "custom", "rules": [{"type": "temporary", "reason": "R"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing file", Config{Files: []string{filepath.Join(dir, "none.json")}}, "files[0]: reading the custom plugin monitor"},
		{"bad file", Config{Files: []string{bad}}, "files[0]: " + bad + ":1: field rules[0].path: a rule needs the plugin's path"},
		{"bad inline rule", Config{Monitors: []Monitor{{Rules: []Rule{{Type: "permanent", Reason: "R", Path: "/bin/true", Condition: "C"}}}}},
			"monitors[0].rules[0].condition: not among the monitor's conditions"},
		{"inline log monitor", Config{Monitors: []Monitor{{Plugin: "filelog"}}}, `monitors[0].plugin: "filelog" is a system log monitor`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error holding %q", err, tt.want)
			}
		})
	}
	if err := (&Config{Monitors: []Monitor{{Rules: []Rule{{Type: "temporary", Reason: "R", Path: "/bin/true"}}}}}).Validate(); err != nil {
		t.Errorf("an inline monitor without plugin: %v", err)
	}
}

func TestIsCustomPluginFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		content string
		want    bool
	}{
		{`{"plugin": "custom", "rules": []}`, true},
		{`{"plugin": "kmsg", "rules": []}`, false},
		{`{"rules": []}`, false},
		{`not json`, false},
	} {
		path := filepath.Join(dir, "f.json")
		if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := IsCustomPluginFile(path); got != tt.want {
			t.Errorf("IsCustomPluginFile(%s) = %v, want %v", tt.content, got, tt.want)
		}
	}
	if IsCustomPluginFile(filepath.Join(dir, "missing.json")) {
		t.Error("a missing file is a custom plugin monitor")
	}
	if IsCustomPluginFile(filepath.Join("..", "..", "logrules", "kernelrules", "testdata", "npd", "kernel-monitor.json")) {
		t.Error("NPD's kernel-monitor.json is a custom plugin monitor")
	}
}

func FuzzParseFile(f *testing.F) {
	for _, path := range []string{"custom-plugin-monitor.json", "systemd-monitor-counter.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", "npd", path))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseFile("fuzz.json", data)
		if err != nil {
			return
		}
		// What reads must validate again and build a check.
		if err := m.Validate(); err != nil {
			t.Fatalf("ParseFile accepted a monitor Validate rejects: %v", err)
		}
		if _, err := New(&Config{Monitors: []Monitor{*m}}, testEnv(t)); err != nil {
			t.Fatalf("ParseFile accepted a monitor New rejects: %v", err)
		}
	})
}
