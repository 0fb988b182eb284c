package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logsource"
)

const (
	topFields      = "checks, evidence, keepStartupPages, kubeconfig, listenAddress, logFormat, logTo, nodeName, output, procPath, remediation, reportDegraded, reporter, standalone, stateDir, sysPath"
	reporterFields = "aggregateConditions, clientBurst, clientQPS, eventBurst, eventQPS, eventSpoolSize, heartbeat, minWriteInterval, reasons"
	ruleFields     = "attribute, clearAfter, condition, contains, details, exclude, group, kind, minCount, name, pattern, reason, source, window"
)

// kmsgFields lists the kmsg section's fields as the error names them; it is
// read from the type so that a new kmsg field does not break these tests.
var kmsgFields = func() string {
	t := reflect.TypeFor[kmsg.Config]()
	var names []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}()

// badConfigs are files Load must reject. want is the whole error, with FILE
// standing for the file's path.
var badConfigs = []struct {
	name  string
	yaml  string
	line  int
	field string
	want  string
}{
	{
		name:  "taint on an aggregate condition, True while healthy",
		yaml:  "reporter:\n  aggregateConditions: true\nremediation:\n  taints:\n    - condition: DiskIOStuck\n      key: a\n      effect: NoSchedule\n    - condition: StorageReady\n      key: b\n      effect: NoSchedule\n",
		line:  8,
		field: "remediation.taints[1].condition",
		want:  "config FILE:8: field remediation.taints[1].condition: StorageReady is an aggregate condition, True while the node is healthy; name the nodeguard condition types it is made of instead (docs/consumers.md)",
	},
	{
		name:  "kubelet restart on an aggregate condition",
		yaml:  "reporter:\n  aggregateConditions: true\nremediation:\n  restartKubelet:\n    enabled: true\n    when: [KubeletLeaseStale, ContainerRuntimeReady]\n",
		line:  6,
		field: "remediation.restartKubelet.when[1]",
		want:  "config FILE:6: field remediation.restartKubelet.when[1]: ContainerRuntimeReady is an aggregate condition, True while the node is healthy; name the nodeguard condition types it is made of instead (docs/consumers.md)",
	},
	{
		name:  "negative dedup window",
		yaml:  "checks:\n  kmsg:\n    dedupWindow: -1m\n",
		line:  3,
		field: "checks.kmsg.dedupWindow",
		want:  `config FILE:3: field checks.kmsg.dedupWindow: "-1m" is negative`,
	},
	{
		name:  "reason counting occurrences without a window",
		yaml:  "reporter:\n  reasons:\n    NICLinkDown:\n      minOccurrences: 3\n",
		line:  3,
		field: "reporter.reasons.NICLinkDown.window",
		want:  "config FILE:3: field reporter.reasons.NICLinkDown.window: minOccurrences 3 needs a window above zero, such as 10m",
	},
	{
		name:  "reason window without minOccurrences",
		yaml:  "reporter:\n  reasons:\n    IOError:\n      window: 10m\n",
		line:  4,
		field: "reporter.reasons.IOError.window",
		want:  "config FILE:4: field reporter.reasons.IOError.window: a window counts minOccurrences, which is not above 1",
	},
	{
		name:  "negative reason budget",
		yaml:  "reporter:\n  reasons:\n    IOError:\n      eventsPerHour: -1\n",
		line:  4,
		field: "reporter.reasons.IOError.eventsPerHour",
		want:  "config FILE:4: field reporter.reasons.IOError.eventsPerHour: -1 is negative",
	},
	{
		name:  "negative minOccurrences",
		yaml:  "reporter:\n  reasons:\n    IOError:\n      minOccurrences: -2\n",
		line:  4,
		field: "reporter.reasons.IOError.minOccurrences",
		want:  "config FILE:4: field reporter.reasons.IOError.minOccurrences: -2 is negative",
	},
	{
		name:  "misspelt reason setting",
		yaml:  "reporter:\n  reasons:\n    IOError:\n      eventsPerHr: 5\n",
		line:  4,
		field: "reporter.reasons.IOError.eventsPerHr",
		want:  "config FILE:4: field reporter.reasons.IOError.eventsPerHr: unknown field; known fields here: enabled, eventsPerHour, minOccurrences, window",
	},
	{
		name:  "reason setting of the wrong type",
		yaml:  "reporter:\n  reasons:\n    IOError:\n      enabled: sometimes\n",
		line:  4,
		field: "reporter.reasons.IOError.enabled",
		want:  `config FILE:4: field reporter.reasons.IOError.enabled: "sometimes" is not true or false`,
	},
	{
		name:  "evidence cap below the least",
		yaml:  "evidence:\n  maxDirBytes: 100\n",
		line:  2,
		field: "evidence.maxDirBytes",
		want:  "config FILE:2: field evidence.maxDirBytes: 100 is below the least, 4096",
	},
	{
		name:  "evidence total below one directory",
		yaml:  "evidence:\n  maxDirBytes: 1048576\n  maxTotalBytes: 65536\n",
		line:  3,
		field: "evidence.maxTotalBytes",
		want:  "config FILE:3: field evidence.maxTotalBytes: 65536 is below evidence.maxDirBytes, 1048576: not one capture would fit",
	},
	{
		name:  "evidence condition left empty",
		yaml:  "evidence:\n  conditions:\n    - KernelDeadlock\n    - \"\"\n",
		line:  4,
		field: "evidence.conditions[1]",
		want:  "config FILE:4: field evidence.conditions[1]: names no condition type",
	},
	{
		name:  "evidence unit not a unit",
		yaml:  "evidence:\n  serviceUnits: [kubelet.service, /usr/bin/containerd]\n",
		line:  2,
		field: "evidence.serviceUnits[1]",
		want:  `config FILE:2: field evidence.serviceUnits[1]: "/usr/bin/containerd" is not a systemd unit name such as containerd.service`,
	},
	{
		name:  "evidence timeout a number",
		yaml:  "evidence:\n  timeout: 10\n",
		line:  2,
		field: "evidence.timeout",
		want:  `config FILE:2: field evidence.timeout: "10" is not a duration such as "30s" or "5m"`,
	},
	{
		name:  "unknown top-level field",
		yaml:  "nodeName: a\nbogus: 1\n",
		line:  2,
		field: "bogus",
		want:  "config FILE:2: field bogus: unknown field; known fields here: " + topFields,
	},
	{
		name:  "unknown nested field",
		yaml:  "reporter:\n  heartbeat: 1m\n  heartbeet: 5m\n",
		line:  3,
		field: "reporter.heartbeet",
		want:  "config FILE:3: field reporter.heartbeet: unknown field; known fields here: " + reporterFields,
	},
	{
		name:  "bad duration",
		yaml:  "# comment\nreporter:\n  heartbeat: 5 minutes\n",
		line:  3,
		field: "reporter.heartbeat",
		want:  `config FILE:3: field reporter.heartbeat: "5 minutes" is not a duration such as "30s" or "5m"`,
	},
	{
		name:  "negative duration",
		yaml:  "reporter:\n  minWriteInterval: -1s\n",
		line:  2,
		field: "reporter.minWriteInterval",
		want:  `config FILE:2: field reporter.minWriteInterval: "-1s" is negative`,
	},
	{
		name:  "duration without a unit",
		yaml:  "reporter:\n  minWriteInterval: 0\n",
		line:  2,
		field: "reporter.minWriteInterval",
		want:  `config FILE:2: field reporter.minWriteInterval: 0 is a number; write a duration with its unit, such as "0s" or "5m"`,
	},
	{
		name:  "duration without a unit inside a check",
		yaml:  "checks:\n  kmsg:\n    disableRules: []\n    expireInterval: 0\n",
		line:  4,
		field: "checks.kmsg.expireInterval",
		want:  `config FILE:4: field checks.kmsg.expireInterval: 0 is a number; write a duration with its unit, such as "0s" or "5m"`,
	},
	{
		name:  "heartbeat below 10s",
		yaml:  "output: text\nreporter:\n  eventBurst: 3\n  heartbeat: 5s\n",
		line:  4,
		field: "reporter.heartbeat",
		want:  "config FILE:4: field reporter.heartbeat: 5s is below the least heartbeat, 10s",
	},
	{
		name:  "zero burst",
		yaml:  "reporter:\n  clientBurst: 0\n",
		line:  2,
		field: "reporter.clientBurst",
		want:  "config FILE:2: field reporter.clientBurst: 0 must be above zero",
	},
	{
		name:  "string for a whole number",
		yaml:  "reporter:\n  eventBurst: ten\n",
		line:  2,
		field: "reporter.eventBurst",
		want:  `config FILE:2: field reporter.eventBurst: "ten" is not a whole number`,
	},
	{
		name:  "string for a number",
		yaml:  "reporter:\n  eventQPS: fast\n",
		line:  2,
		field: "reporter.eventQPS",
		want:  `config FILE:2: field reporter.eventQPS: "fast" is not a number`,
	},
	{
		name:  "quoted number",
		yaml:  "reporter:\n  clientBurst: \"10\"\n",
		line:  2,
		field: "reporter.clientBurst",
		want:  `config FILE:2: field reporter.clientBurst: "10" is quoted, so it is a string; want a whole number without quotes`,
	},
	{
		name:  "infinity as a string",
		yaml:  "reporter:\n  eventQPS: inf\n",
		line:  2,
		field: "reporter.eventQPS",
		want:  `config FILE:2: field reporter.eventQPS: "inf" is not a number`,
	},
	{
		name:  "fraction for a whole number",
		yaml:  "reporter:\n  eventBurst: 2.5\n",
		line:  2,
		field: "reporter.eventBurst",
		want:  `config FILE:2: field reporter.eventBurst: "2.5" is not a whole number`,
	},
	{
		// YAML reads 017 as octal 15; the user means 17 or a typo.
		name:  "leading zero",
		yaml:  "reporter:\n  eventBurst: 017\n",
		line:  2,
		field: "reporter.eventBurst",
		want:  `config FILE:2: field reporter.eventBurst: "017" is not a whole number in plain decimal digits`,
	},
	{
		name:  "number for a string",
		yaml:  "listenAddress: 9102\n",
		line:  1,
		field: "listenAddress",
		want:  "config FILE:1: field listenAddress: 9102 is not a string; quote it",
	},
	{
		name:  "list for a mapping",
		yaml:  "reporter:\n  - heartbeat: 1m\n",
		line:  2,
		field: "reporter",
		want:  "config FILE:2: field reporter: want a mapping of fields",
	},
	{
		name:  "mapping for a list",
		yaml:  "checks:\n  kmsg:\n    disableRules:\n      name: oom-kill\n",
		line:  4,
		field: "checks.kmsg.disableRules",
		want:  "config FILE:4: field checks.kmsg.disableRules: want a list",
	},
	{
		name:  "list for the checks mapping",
		yaml:  "checks: [kmsg]\n",
		line:  1,
		field: "checks",
		want:  "config FILE:1: field checks: want a mapping from check name to its settings",
	},
	{
		name:  "scalar for a check section",
		yaml:  "checks:\n  kmsg: on\n",
		line:  2,
		field: "checks.kmsg",
		want:  "config FILE:2: field checks.kmsg: want a mapping of the check's settings",
	},
	{
		name:  "unknown check name",
		yaml:  "checks:\n  kmsg: {}\n  nosuch:\n    enabled: true\n",
		line:  3,
		field: "checks.nosuch",
		want:  `config FILE:3: field checks.nosuch: no check is named "nosuch"; known checks: ` + strings.Join(all.Registry.Names(), ", "),
	},
	{
		name:  "unknown field in a check",
		yaml:  "checks:\n  kmsg:\n    enabled: true\n    foo: 1\n",
		line:  4,
		field: "checks.kmsg.foo",
		want:  "config FILE:4: field checks.kmsg.foo: unknown field; known fields here: " + kmsgFields,
	},
	{
		name:  "enabled: maybe",
		yaml:  "checks:\n  kmsg:\n    enabled: maybe\n",
		line:  3,
		field: "checks.kmsg.enabled",
		want:  `config FILE:3: field checks.kmsg.enabled: "maybe" is not true or false`,
	},
	{
		name:  "number for a boolean",
		yaml:  "nodeName: a\nstandalone: 1\n",
		line:  2,
		field: "standalone",
		want:  `config FILE:2: field standalone: "1" is not true or false`,
	},
	{
		name: "user rule with a bad regex",
		yaml: `checks:
  kmsg:
    rules:
    - name: disk-ok
      kind: event
      reason: DiskNote
      contains: disk
      pattern: 'disk \w+'
    - name: disk-bad
      kind: event
      reason: DiskBad
      contains: disk
      pattern: 'disk ('
`,
		line:  13,
		field: "checks.kmsg.rules[1].pattern",
		want:  "config FILE:13: field checks.kmsg.rules[1].pattern: error parsing regexp: missing closing ): `disk (` (value disk ()",
	},
	{
		name: "user rule of kind incident",
		yaml: `checks:
  kmsg:
    rules:
    - name: disk
      kind: incident
      reason: DiskBad
      contains: disk
      pattern: 'disk'
`,
		line:  5,
		field: "checks.kmsg.rules[0].kind",
		want:  `config FILE:5: field checks.kmsg.rules[0].kind: must be "event" or "condition" (value incident)`,
	},
	{
		name: "user rule setting an undeclared condition",
		yaml: `checks:
  kmsg:
    rules:
    - name: disk
      kind: condition
      condition: DiskBroken
      reason: DiskBad
      contains: disk
      pattern: 'disk'
`,
		line:  6,
		field: "checks.kmsg.rules[0].condition",
		want:  "config FILE:6: field checks.kmsg.rules[0].condition: no condition of that type is declared; add it under conditions (value DiskBroken)",
	},
	{
		name: "user rule detail that captures nothing",
		yaml: `checks:
  kmsg:
    rules:
    - name: fw
      kind: event
      reason: FirmwareFault
      pattern: 'firmware fault'
      details:
      - label: code
        pattern: 'code 0x[0-9a-f]+'
`,
		line:  10,
		field: "checks.kmsg.rules[0].details[0].pattern",
		want:  "config FILE:10: field checks.kmsg.rules[0].details[0].pattern: a detail's pattern needs a (group) that captures the fact (value code 0x[0-9a-f]+)",
	},
	{
		name:  "unknown field in a user rule",
		yaml:  "checks:\n  kmsg:\n    rules:\n    - name: disk\n      patern: x\n",
		line:  5,
		field: "checks.kmsg.rules[0].patern",
		want:  "config FILE:5: field checks.kmsg.rules[0].patern: unknown field; known fields here: " + ruleFields,
	},
	{
		name:  "disableRules naming no rule",
		yaml:  "checks:\n  kmsg:\n    disableRules: [oom-kill, nope]\n",
		line:  3,
		field: "checks.kmsg.disableRules",
		want:  `config FILE:3: field checks.kmsg.disableRules: disableRules names "nope", which is no rule (value [oom-kill nope])`,
	},
	{
		name:  "output: xml",
		yaml:  "nodeName: a\noutput: xml\n",
		line:  2,
		field: "output",
		want:  `config FILE:2: field output: "xml" is not one of text, json`,
	},
	{
		name: "invalid YAML",
		yaml: "output: json\nlogTo: stderr\n  logFormat: json\n",
		line: 3,
		want: "config FILE:3: not valid YAML: mapping values are not allowed in this context",
	},
	{
		name: "invalid YAML on the first line",
		yaml: "output: json: text\n",
		line: 1,
		want: "config FILE:1: not valid YAML: mapping values are not allowed in this context",
	},
	{
		// yaml.v3 counts this error's line from 0; the [ is on line 3.
		name: "unclosed flow sequence",
		yaml: "checks:\n  kmsg:\n    disableRules: [oom-kill\nnodeName: x\n",
		line: 3,
		want: "config FILE:3: not valid YAML: did not find expected ',' or ']'",
	},
	{
		name: "list item among mapping keys",
		yaml: "output: json\n- x\n",
		line: 2,
		want: "config FILE:2: not valid YAML: did not find expected key",
	},
	{
		name: "text after a quoted scalar",
		yaml: "nodeName: a\nlogTo: stderr\n\nkubeconfig: 'x'y\n",
		line: 4,
		want: "config FILE:4: not valid YAML: did not find expected key",
	},
	{
		name: "unterminated quote",
		yaml: "output: json\nnodeName: \"abc\n",
		line: 2,
		want: "config FILE:2: not valid YAML: found unexpected end of stream",
	},
	{
		name: "tab indentation",
		yaml: "reporter:\n\theartbeat: 1m\n",
		line: 2,
		want: "config FILE:2: not valid YAML: found character that cannot start any token",
	},
	{
		name: "duplicate key",
		yaml: "output: json\nlogTo: stderr\noutput: text\n",
		line: 3,
		want: `config FILE:3: not valid YAML: mapping key "output" already defined at line 1`,
	},
	{
		// The error is where the alias is used, not where its anchor is.
		name:  "alias of the wrong shape",
		yaml:  "reporter: &r\n  heartbeat: 1m\nnodeName: *r\n",
		line:  3,
		field: "nodeName",
		want:  "config FILE:3: field nodeName: want a single string value",
	},
	{
		name:  "line break in a key",
		yaml:  "\"out\\nput\": json\n",
		line:  1,
		field: "out\nput",
		want:  `config FILE:1: field out\nput: unknown field; known fields here: ` + topFields,
	},
	{
		name:  "whole document not a mapping",
		yaml:  "- output: json\n",
		line:  1,
		field: "",
		want:  "config FILE:1: want a mapping of fields",
	},
}

func writeConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nodeguard.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadRejects(t *testing.T) {
	for _, tc := range badConfigs {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.yaml)
			cfg, err := config.Load(path, all.Registry)
			if err == nil {
				t.Fatalf("Load succeeded, want an error; got %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("Load returned a config with its error")
			}
			want := strings.ReplaceAll(tc.want, "FILE", path)
			if got := err.Error(); got != want {
				t.Errorf("error:\n got  %s\n want %s", got, want)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("error is more than one line: %q", err.Error())
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *config.Error", err)
			}
			if ce.File != path || ce.Line != tc.line || ce.Field != tc.field {
				t.Errorf("error names %s:%d field %q, want %s:%d field %q", ce.File, ce.Line, ce.Field, path, tc.line, tc.field)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := config.Load(path, all.Registry)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.File != path {
		t.Fatalf("Load of a missing file: %v, want a *config.Error naming %s", err, path)
	}
	if !strings.HasPrefix(err.Error(), "config "+path+": reading the file: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q does not name the file on one line", err)
	}
}

func TestLoadDefaults(t *testing.T) {
	want := config.Default(all.Registry)
	for _, tc := range []struct{ name, yaml string }{
		{"empty file", ""},
		{"only a comment", "# nothing set\n"},
		{"empty document", "---\n"},
		{"null document", "null\n"},
		{"null sections", "reporter:\nnodeName: ~\n"},
		{"checks with every section commented out", readTestdata(t, "commented-checks.yaml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := config.Load(writeConfig(t, tc.yaml), all.Registry)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
	t.Run("no file", func(t *testing.T) {
		got, err := config.Load("", all.Registry)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Load(\"\") = %+v, %v; want the defaults", got, err)
		}
	})
	if !want.Enabled[kmsg.Name] {
		t.Errorf("kmsg is off by default")
	}
	if want.Reporter.Heartbeat.Duration != 5*time.Minute || want.Output != "text" || want.ListenAddress != ":9102" {
		t.Errorf("unexpected defaults: %+v", want)
	}
}

// TestLoadValues checks single values that YAML could read more than one
// way.
func TestLoadValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(*config.Config) bool
	}{
		{"off is a string", "listenAddress: off\n", func(c *config.Config) bool { return c.ListenAddress == "off" }},
		{"yes is a string", "nodeName: yes\n", func(c *config.Config) bool { return c.NodeName == "yes" }},
		{"quoted zero duration", "checks:\n  kmsg:\n    expireInterval: \"0\"\n", func(c *config.Config) bool {
			return c.CheckConfigs[kmsg.Name].(*kmsg.Config).ExpireInterval.Duration == 0
		}},
		{"least heartbeat", "reporter:\n  heartbeat: 10s\n", func(c *config.Config) bool { return c.Reporter.Heartbeat.Duration == 10*time.Second }},
		{"whole number for a float", "reporter:\n  eventQPS: 2\n", func(c *config.Config) bool { return c.Reporter.EventQPS == 2 }},
		{"fraction", "reporter:\n  clientQPS: .25\n", func(c *config.Config) bool { return c.Reporter.ClientQPS == 0.25 }},
		{"plus sign", "reporter:\n  clientBurst: +7\n", func(c *config.Config) bool { return c.Reporter.ClientBurst == 7 }},
		{"anchored value", "stateDir: &d /srv/ng\nkubeconfig: *d\n", func(c *config.Config) bool {
			return c.StateDir == "/srv/ng" && c.Kubeconfig == "/srv/ng"
		}},
		{"empty check section", "checks:\n  kmsg:\n", func(c *config.Config) bool {
			return c.Enabled[kmsg.Name] && reflect.DeepEqual(c.CheckConfigs[kmsg.Name], kmsg.DefaultConfig())
		}},
		{"check turned off", "checks:\n  kmsg:\n    enabled: false\n", func(c *config.Config) bool { return !c.Enabled[kmsg.Name] }},
		{
			// A check that is off is not validated: its rules may be
			// half-written.
			"bad rule in a check turned off",
			"checks:\n  kmsg:\n    enabled: false\n    rules:\n    - name: wip\n      pattern: '('\n",
			func(c *config.Config) bool { return !c.Enabled[kmsg.Name] },
		},
		{"later document ignored", "output: json\n---\noutput: xml\n", func(c *config.Config) bool { return c.Output == "json" }},
		{"per-reason settings", "reporter:\n  reasons:\n    NICLinkDown: {minOccurrences: 3, window: 10m}\n    Ext4Warning: {enabled: false}\n    IOError: {eventsPerHour: 20}\n",
			func(c *config.Config) bool {
				r := c.Reporter.Reasons
				return r["NICLinkDown"].MinOccurrences == 3 && r["NICLinkDown"].Window.Duration == 10*time.Minute &&
					r["Ext4Warning"].Enabled != nil && !*r["Ext4Warning"].Enabled && r["IOError"].EventsPerHour == 20
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(writeConfig(t, tc.yaml), all.Registry)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected config: %+v", c)
			}
		})
	}
}

func TestLoadFullFile(t *testing.T) {
	c, err := config.Load(filepath.Join("testdata", "full.yaml"), all.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"nodeName", c.NodeName, "node-a"},
		{"kubeconfig", c.Kubeconfig, "/etc/kubernetes/kubelet.conf"},
		{"standalone", c.Standalone, true},
		{"output", c.Output, "json"},
		{"listenAddress", c.ListenAddress, "127.0.0.1:9200"},
		{"logTo", c.LogTo, "stderr"},
		{"logFormat", c.LogFormat, "console"},
		{"procPath", c.ProcPath, "/host/proc"},
		{"sysPath", c.SysPath, "/host/sys"},
		{"stateDir", c.StateDir, "/var/lib/nodeguard-test"},
		{"reporter.heartbeat", c.Reporter.Heartbeat.Duration, 150 * time.Second},
		{"reporter.minWriteInterval", c.Reporter.MinWriteInterval.Duration, 500 * time.Millisecond},
		{"reporter.eventQPS", c.Reporter.EventQPS, 0.5},
		{"reporter.eventBurst", c.Reporter.EventBurst, 5},
		{"reporter.clientQPS", c.Reporter.ClientQPS, 20.0},
		{"reporter.clientBurst", c.Reporter.ClientBurst, 40},
		{"checks.kmsg.enabled", c.Enabled[kmsg.Name], true},
	} {
		if !reflect.DeepEqual(f.got, f.want) {
			t.Errorf("%s = %#v, want %#v", f.name, f.got, f.want)
		}
	}

	kc, ok := c.CheckConfigs[kmsg.Name].(*kmsg.Config)
	if !ok {
		t.Fatalf("kmsg config is %T", c.CheckConfigs[kmsg.Name])
	}
	// The file's fields over the check's defaults.
	want := kmsg.DefaultConfig()
	want.Rules = []logrules.Rule{{
		Name: "widget-jam", Kind: finding.KindCondition, Condition: "WidgetJammed", Reason: "WidgetJam",
		Contains: "widget", Pattern: `widget \d+ jammed`,
		ClearAfter: finding.Duration{Duration: time.Hour},
	}}
	want.DisableRules = []string{"ext4-warning"}
	want.Conditions = []finding.ConditionDefault{{Type: "WidgetJammed", Reason: "WidgetsTurning", Message: "every widget turns"}}
	want.ExpireInterval = finding.Duration{Duration: time.Minute}
	if !reflect.DeepEqual(kc, want) {
		t.Errorf("kmsg config:\n got  %+v\n want %+v", kc, want)
	}

	// The user rule runs beside the built-in ones, and the disabled rule
	// does not.
	rules, err := kc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	engine := rules.Engine()
	if conds := engine.Conditions(); !containsCondition(conds, "WidgetJammed") || !containsCondition(conds, "KernelDeadlock") {
		t.Errorf("engine owns %+v, want WidgetJammed beside the built-in conditions", conds)
	}
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		line    string
		reasons []string
	}{
		{"nodeguard-test: widget 7 jammed", []string{"WidgetJam"}},
		{"EXT4-fs warning (device sda1): ext4_end_bio:343: I/O error 10 writing to inode 12", nil},
		{"EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0", []string{"Ext4Error"}},
	} {
		got := feedReasons(engine, tc.line, now)
		if !reflect.DeepEqual(got, tc.reasons) {
			t.Errorf("line %q gave reasons %v, want %v", tc.line, got, tc.reasons)
		}
	}
}

func TestLoadUserRuleReplacesDefault(t *testing.T) {
	c, err := config.Load(filepath.Join("testdata", "replace-default.yaml"), all.Registry)
	if err != nil {
		t.Fatal(err)
	}
	kc := c.CheckConfigs[kmsg.Name].(*kmsg.Config)
	rules, err := kc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	engine := rules.Engine()
	now := time.Unix(1000, 0)
	// The built-in oom-kill rule would match this line; its replacement
	// does not.
	if got := feedReasons(engine, "Killed process 4321 (stress) total-vm:1024kB, anon-rss:512kB", now); got != nil {
		t.Errorf("the built-in oom-kill rule still runs: %v", got)
	}
	// The replacement fires once, under its own reason.
	if got := feedReasons(engine, "Out of memory: Killed process 4321 (stress) total-vm:1024kB", now.Add(time.Minute)); !reflect.DeepEqual(got, []string{"MemoryExhausted"}) {
		t.Errorf("replacement rule gave %v, want [MemoryExhausted]", got)
	}
	// Other built-in rules are untouched.
	if got := feedReasons(engine, "Kernel panic - not syncing: Fatal exception", now.Add(2*time.Minute)); !reflect.DeepEqual(got, []string{"KernelPanic"}) {
		t.Errorf("kernel panic line gave %v, want [KernelPanic]", got)
	}
}

// feedReasons feeds one line and ends the report it may begin.
func feedReasons(e *logrules.Engine, text string, at time.Time) []string {
	var reasons []string
	for _, f := range e.Flush(e.Feed(logrules.Line{Text: text, Time: at}, nil)) {
		reasons = append(reasons, f.Reason)
	}
	return reasons
}

func containsCondition(conds []finding.ConditionDefault, typ string) bool {
	for _, c := range conds {
		if c.Type == typ {
			return true
		}
	}
	return false
}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestErrorIsOneLine(t *testing.T) {
	for _, e := range []*config.Error{
		{File: "a.yaml", Line: 3, Field: "x\ny", Reason: "bad\r\nvalue"},
		{Reason: "flags only\n"},
	} {
		if s := e.Error(); strings.ContainsAny(s, "\r\n") {
			t.Errorf("Error() = %q, more than one line", s)
		}
	}
	if got := (&config.Error{Field: "output", Reason: "bad"}).Error(); got != "config flags: field output: bad" {
		t.Errorf("flag error reads %q", got)
	}
}

// TestLoadDeployConfig loads the configs the DaemonSets ship, so that the
// loader and the manifests cannot drift apart.
func TestLoadDeployConfig(t *testing.T) {
	for _, variant := range []string{"base", "devkmsg"} {
		t.Run(variant, func(t *testing.T) {
			path := filepath.Join("..", "..", "deploy", variant, "config.yaml")
			if _, err := os.Stat(path); err != nil {
				t.Skip(err)
			}
			if variant == "base" && !logsource.JournalAvailable {
				t.Skip("the base reads the kernel log from the journal, which needs the journald build tag (the image and make test have it)")
			}
			c, err := config.Load(path, all.Registry)
			if err != nil {
				t.Fatal(err)
			}
			if c.ProcPath != "/host/proc" || c.Reporter.Heartbeat.Duration != 5*time.Minute {
				t.Errorf("deploy config read as %+v", c)
			}
		})
	}
}
