package logrules

import (
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestRequiredLiteral(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{`Killed process \d+ \(`, "Killed process "},
		{`INFO: task \S+:\d+ blocked for more than \d+ seconds`, " blocked for more than "},
		{`(?:Remounting filesystem read-only)$`, "Remounting filesystem read-only"},
		{`foo|bar`, ""},
		{`(?i)oops`, ""},
		{`(abc)+x`, "abc"},
		{`[`, ""},
	}
	for _, tt := range tests {
		if got := RequiredLiteral(tt.pattern); got != tt.want {
			t.Errorf("RequiredLiteral(%q) = %q, want %q", tt.pattern, got, tt.want)
		}
	}
}

func TestNPDKernelMonitorRules(t *testing.T) {
	rules, conds, err := LoadNPD("testdata/npd/kernel-monitor.json")
	if err != nil {
		t.Fatal(err)
	}
	rules, conds = AddNPD(DefaultRules(), DefaultConditions(), rules, conds)
	e, err := NewEngine(rules, conds)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string
		want []string // reason or condition=reason, in order
	}{
		// The built-in rule and NPD's describe the same kill: one finding.
		{"Out of memory: Killed process 77 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB", []string{"OOMKilling"}},
		// NPD's multi-line OOM rule is matched by its last line, once.
		{"Killed process 78 (y) total-vm:1kB, anon-rss:1kB, file-rss:0kB", []string{"OOMKilling"}},
		// One condition per line: the built-in reason wins over DockerHung.
		{"INFO: task docker:123 blocked for more than 120 seconds.", []string{"TaskHung", "KernelDeadlock=ContainerRuntimeHung"}},
		// NPD's own reasons and conditions are kept.
		{"EDAC MC0: 1 CE memory read error on DIMM", []string{"MemoryHardwareError", "MemoryReadError"}},
		{"dockerd: returned error: readlink /var/lib/docker/overlay2/l/X: invalid argument", []string{"CorruptDockerOverlay2=CorruptDockerOverlay2"}},
		{"divide error: 0000 [#1] SMP", []string{"KernelOops"}},
		{"EXT4-fs (sda1): mounted filesystem with ordered data mode", nil},
	}
	at := time.Unix(0, 0)
	for _, tt := range tests {
		at = at.Add(time.Minute) // keep reports apart
		var got []string
		for _, f := range e.Feed(Line{Text: tt.line, Time: at}, nil) {
			if f.Kind == finding.KindCondition {
				got = append(got, f.Type+"="+f.Reason)
			} else {
				got = append(got, f.Reason)
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%q: got %v, want %v", tt.line, got, tt.want)
		}
	}
	var types []string
	for _, c := range e.Conditions() {
		types = append(types, c.Type)
	}
	if strings.Join(types, ",") != "KernelDeadlock,ReadonlyFilesystem,FrequentUnregisterNetDevice,MemoryCgroupLeak,CorruptDockerOverlay2" {
		t.Errorf("conditions %v: want the built-in ones once and NPD's new one", types)
	}
}

func TestNPDErrorsNameFileRuleAndField(t *testing.T) {
	tests := []struct{ json, want string }{
		{`{"rules":[{"type":"sometimes","reason":"X","pattern":"y"}]}`, `f.json: rules[0].type: "sometimes"`},
		{`{"rules":[{"type":"permanent","condition":"Nope","reason":"X","pattern":"y"}]}`, `f.json: rules[0].condition: condition "Nope"`},
		{`{"rules":[{"type":"temporary","reason":"X","pattern":"("}]}`, `f.json: rules[0]: rule 0 ("npd-0-X"): field pattern`},
		{`{"rules":[{"type":"temporary","reason":"X","pattern":""}]}`, `f.json: rules[0].pattern: empty pattern`},
		{`{"plugin":"custom"}`, `f.json: field plugin`},
		{`{"plugin":"journald"}`, `journald monitors (kubelet, runtime units) are not kernel log rules`},
		{`{"conditions":[{"type":"A"}]}`, `f.json: conditions[0]`},
		{`not json`, `f.json: not a log monitor config`},
	}
	for _, tt := range tests {
		_, _, err := ParseNPD("f.json", []byte(tt.json))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseNPD(%s) = %v, want an error holding %q", tt.json, err, tt.want)
		}
	}
}

func FuzzParseNPD(f *testing.F) {
	f.Add([]byte(`{"rules":[{"type":"temporary","reason":"X","pattern":"a\\nb"}]}`))
	f.Add([]byte(`{"conditions":[{"type":"A","reason":"B"}],"rules":[{"type":"permanent","condition":"A","reason":"C","pattern":"x+"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, conds, err := ParseNPD("fuzz.json", data)
		if err != nil {
			return
		}
		// Whatever loads must also build an engine.
		if _, err := NewEngine(rules, conds); err != nil {
			t.Fatalf("ParseNPD accepted rules NewEngine rejects: %v", err)
		}
	})
}
