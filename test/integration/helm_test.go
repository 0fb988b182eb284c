package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// TestHelmChartLintsRendersAndApplies: helm (built by hack/) lints the chart
// and renders it with default and with remediation values; each rendering
// passes server-side dry-run on the real API server, and the config it
// carries loads in the agent.
func TestHelmChartLintsRendersAndApplies(t *testing.T) {
	c := needCluster(t)
	helm := filepath.Join(c.BinDir, "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Skip("no helm in " + c.BinDir + " (hack/build-test-binaries.sh builds it)")
	}
	chart, _ := filepath.Abs("../../deploy/helm/nodeguard")
	env := append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	runHelm := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(helm, args...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
		}
		return out.String()
	}
	runHelm("lint", chart)
	ensureNamespace(t, "nodeguard")

	remediation := filepath.Join(t.TempDir(), "values.yaml")
	os.WriteFile(remediation, []byte(`remediation:
  restartKubelet: {enabled: true}
  taints:
    - {condition: DiskIOStuck, key: nodeguard.io/disk-io-stuck, effect: NoSchedule}
rules:
  - {name: widget-jam, kind: event, reason: WidgetJam, pattern: 'widget \d+ jammed'}
`), 0o644)
	for name, extra := range map[string][]string{"defaults": nil, "remediation": {"--values", remediation}, "devkmsg": {"--set", "kernelLog=devkmsg"}} {
		t.Run(name, func(t *testing.T) {
			rendered := runHelm(append([]string{"template", "ng", chart, "--namespace", "nodeguard"}, extra...)...)
			manifest := filepath.Join(t.TempDir(), "rendered.yaml")
			os.WriteFile(manifest, []byte(rendered), 0o644)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := c.Kubectl(ctx, "apply", "--dry-run=server", "-f", manifest)
			if err != nil {
				t.Fatalf("dry-run apply of the rendered chart: %v\n%s", err, out)
			}
			for _, want := range []string{"daemonset.apps/ng", "validatingadmissionpolicy.admissionregistration.k8s.io/ng-own-node-nodes"} {
				if !strings.Contains(out, want) {
					t.Errorf("dry-run output lacks %s:\n%s", want, out)
				}
			}
			// The config the chart ships loads in the agent.
			var cfg string
			for _, doc := range strings.Split(rendered, "\n---") {
				var cm struct {
					Kind string            `json:"kind"`
					Data map[string]string `json:"data"`
				}
				if yaml.Unmarshal([]byte(doc), &cm) == nil && cm.Kind == "ConfigMap" {
					cfg = cm.Data["config.yaml"]
				}
			}
			if cfg == "" {
				t.Fatal("no ConfigMap with config.yaml in the rendered chart")
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			os.WriteFile(path, []byte(cfg), 0o644)
			if out, err := exec.Command(needAgent(t), "replay", "--config="+path, "/dev/null").CombinedOutput(); err != nil {
				t.Errorf("the chart's config does not load: %v\n%s\n%s", err, out, cfg)
			}
			if name == "defaults" && (strings.Contains(rendered, "privileged: true") || strings.Contains(rendered, "/dev/kmsg") || !strings.Contains(cfg, "journal: true")) {
				t.Errorf("the default rendering (kernelLog=journal) is privileged, mounts /dev/kmsg, or does not read the journal:\n%s", rendered)
			}
			if name == "devkmsg" && (!strings.Contains(rendered, "privileged: true") || !strings.Contains(rendered, "/dev/kmsg")) {
				t.Errorf("kernelLog=devkmsg does not mount /dev/kmsg privileged")
			}
			if name == "remediation" && (!strings.Contains(rendered, "system_bus_socket") || !strings.Contains(rendered, `["get", "update"]`) || !strings.Contains(cfg, "widget-jam")) {
				t.Errorf("remediation values did not add the D-Bus mount, node update RBAC and the user rule")
			}
		})
	}
}
