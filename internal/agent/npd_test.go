package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/checks/plugins"
	"github.com/nodeguard/nodeguard/pkg/config"
)

// TestAddNPDFilesSortsByPlugin: --npd-rules files go to the check that runs
// them, by their plugin; a custom plugin monitor for a disabled plugins
// check is an error.
func TestAddNPDFilesSortsByPlugin(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	custom := write("custom.json", `{"plugin": "custom", "rules": [{"type": "temporary", "reason": "R", "path": "/bin/false"}]}`)
	kernel := filepath.Join("..", "..", "pkg", "logrules", "kernelrules", "testdata", "npd", "kernel-monitor.json")
	noPlugin := write("noplugin.json", `{"rules": []}`)
	missing := filepath.Join(dir, "missing.json")
	tests := []struct {
		name        string
		files       []string
		disable     bool
		wantKmsg    []string
		wantPlugins []string
		wantErr     string
	}{
		{"both kinds", []string{kernel, custom, noPlugin}, false, []string{kernel, noPlugin}, []string{custom}, ""},
		{"a missing file is the log loader's to report", []string{missing}, false, []string{missing}, nil, ""},
		{"plugins disabled", []string{custom}, true, nil, nil, "is a custom plugin monitor, and the plugins check that runs them is disabled"},
		{"plugins disabled, log monitors only", []string{kernel}, true, []string{kernel}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Load("", all.Registry)
			if err != nil {
				t.Fatal(err)
			}
			if tt.disable {
				cfg.Enabled[plugins.Name] = false
			}
			err = AddNPDFiles(cfg, tt.files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("AddNPDFiles = %v, want an error holding %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.CheckConfigs[kmsg.Name].(*kmsg.Config).NPDRules; !slices.Equal(got, tt.wantKmsg) {
				t.Errorf("checks.kmsg.npdRules = %q, want %q", got, tt.wantKmsg)
			}
			if got := cfg.CheckConfigs[plugins.Name].(*plugins.Config).Files; !slices.Equal(got, tt.wantPlugins) {
				t.Errorf("checks.plugins.files = %q, want %q", got, tt.wantPlugins)
			}
		})
	}
}

// TestPluginsSectionErrorsNameTheLine: a mistake in an inline monitor of
// the config file names its line, as every config mistake does.
func TestPluginsSectionErrorsNameTheLine(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"checks:\n  plugins:\n    monitors:\n      - conditions:\n          - {type: A, reason: AOK}\n        rules:\n          - type: permanent\n            condition: B\n            reason: ABad\n            path: /bin/true\n",
			":8: field checks.plugins.monitors[0].rules[0].condition: not among the monitor's conditions"},
		{"checks:\n  plugins:\n    monitors:\n      - pluginConfig:\n          timeout: 5\n",
			":5: field checks.plugins.monitors[0].pluginConfig.timeout: \"5\" is not a duration"},
		{"checks:\n  plugins:\n    monitors:\n      - rules:\n          - type: temporary\n            reason: R\n            path: /bin/true\n            interval: 1s\n",
			":8: field checks.plugins.monitors[0].rules[0].interval: unknown field"},
		{"checks:\n  plugins:\n    files: [/nonexistent/x.json]\n",
			":3: field checks.plugins.files[0]: reading the custom plugin monitor"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(path, all.Registry)
		if err == nil || !strings.Contains(err.Error(), path+tt.want) {
			t.Errorf("Load(%q) = %v, want an error holding %q", tt.yaml, err, tt.want)
		}
	}
}
