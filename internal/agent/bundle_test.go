package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/nodeguard/nodeguard/internal/evidence"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/disk"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// documentedBundle is the list of files docs/troubleshooting.md says a
// bundle holds: the first column of its "A support bundle" table.
func documentedBundle(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## A support bundle\n")
	if !ok {
		t.Fatal("docs/troubleshooting.md has no section \"A support bundle\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var files []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(section, -1) {
		files = append(files, m[1])
	}
	return files
}

// TestBundleHoldsWhatTheDocsSay writes a real bundle of a state dir with
// one real capture and compares its files with the docs' list, both ways.
func TestBundleHoldsWhatTheDocsSay(t *testing.T) {
	reg := checks.Registry{disk.Registration}
	cfg, err := config.Load("", reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = t.TempDir()
	dc := cfg.CheckConfigs[disk.Name].(*disk.Config)
	dc.Mounts, dc.ProbeDirs = []string{t.TempDir()}, []string{t.TempDir()}

	// One capture, as the agent makes it.
	recent := evidence.NewRecent(4096, 4096)
	recent.Kernel.Add(time.Now(), "EXT4-fs error (device loop7): remounting filesystem read-only")
	c := newCapturer(cfg, []finding.ConditionDefault{finding.ReadonlyFilesystem}, recent, Deps{Log: zap.NewNop()}.withDefaults())
	rep := reporter.New(zap.NewNop(), []finding.ConditionDefault{finding.ReadonlyFilesystem}, c)
	rep.Start(nil, time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	captured := make(chan finding.Finding, 1)
	go c.Run(ctx, func(f finding.Finding) { captured <- f })
	f := finding.Condition(finding.ReadonlyFilesystem.Type, finding.StatusTrue, "MountReadOnly", "/mnt is read-only")
	f.Check, f.Time = "disk", time.Now()
	rep.Report(f)
	var ev finding.Finding
	select {
	case ev = <-captured:
	case <-time.After(20 * time.Second):
		t.Fatal("no capture")
	}

	var buf bytes.Buffer
	if err := WriteBundle(context.Background(), cfg, reg, "nodeguard v0-test\n", 500*time.Millisecond, &buf); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	gz, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
	var got []string
	dir := path.Base(ev.Source)
	for name := range files {
		got = append(got, strings.Replace(name, evidence.BundleEvidence+dir+"/", evidence.BundleEvidence+"DIR/", 1))
	}
	want := documentedBundle(t)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the bundle holds\n  %v\nthe docs list\n  %v", got, want)
	}
	// The code's own lists are what the docs list.
	var code []string
	code = append(code, evidence.BundleFiles...)
	for _, f := range evidence.Files {
		code = append(code, evidence.BundleEvidence+"DIR/"+f)
	}
	slices.Sort(code)
	if !slices.Equal(code, want) {
		t.Errorf("evidence.BundleFiles and evidence.Files give\n  %v\nthe docs list\n  %v", code, want)
	}

	if v := string(files["version.txt"]); v != "nodeguard v0-test\n" {
		t.Errorf("version.txt = %q", v)
	}
	var effective map[string]any
	if err := yaml.Unmarshal(files["config.yaml"], &effective); err != nil || effective["stateDir"] != cfg.StateDir {
		t.Errorf("config.yaml: %v, stateDir %v:\n%s", err, effective["stateDir"], files["config.yaml"])
	}
	// The effective config is a config file the agent loads.
	p := t.TempDir() + "/config.yaml"
	os.WriteFile(p, files["config.yaml"], 0o644)
	if _, err := config.Load(p, reg); err != nil {
		t.Errorf("the bundle's config.yaml does not load: %v", err)
	}
	if c := string(files["check.txt"]); !strings.Contains(c, "ReadonlyFilesystem") || !strings.Contains(c, "Conditions:") {
		t.Errorf("check.txt:\n%s", c)
	}
	if k := string(files[evidence.BundleEvidence+dir+"/kernel.log"]); !strings.Contains(k, "EXT4-fs error (device loop7)") {
		t.Errorf("the capture's kernel.log in the bundle:\n%s", k)
	}
}
