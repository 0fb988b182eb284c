package all_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/nodeguard/nodeguard/pkg/checks/cri"
	"github.com/nodeguard/nodeguard/pkg/checks/disk"
	"github.com/nodeguard/nodeguard/pkg/checks/dns"
	"github.com/nodeguard/nodeguard/pkg/checks/journald"
	"github.com/nodeguard/nodeguard/pkg/checks/kubelet"
	"github.com/nodeguard/nodeguard/pkg/checks/nic"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logrules"
	"github.com/nodeguard/nodeguard/pkg/logrules/kernelrules"
)

const consumersDir = "../../../deploy/consumers"

// episode is what one short episode of a fault does to a condition type
// under the default configuration: it may last up to raise while raising
// the type (a rule's window, a probe's failures in a row), and the type
// stays True up to hold after the episode is over (a rule's quiet period,
// the probe that sees it well again). untilReboot says a source holds the
// type True until the next boot: a consumer acting on it acts on a node
// that stays broken, whatever its duration.
type episode struct {
	hold, raise time.Duration
	untilReboot bool
}

// episodes models each condition type's sources from their code and
// defaults, not from copies of the numbers: the kernel and journal rules'
// windows and quiet periods, and each probe's period, timeout and
// failures in a row.
func episodes() map[string]episode {
	out := map[string]episode{}
	add := func(typ string, hold, raise time.Duration) {
		e := out[typ]
		e.hold, e.raise = max(e.hold, hold), max(e.raise, raise)
		out[typ] = e
	}
	runtimeRules, _ := kernelrules.RuntimeRules()
	for _, r := range slices.Concat(kernelrules.Rules(), runtimeRules, journald.DefaultRules()) {
		if r.Kind != finding.KindCondition {
			continue
		}
		if r.ClearAfter.Duration == 0 {
			e := out[r.Condition]
			e.untilReboot = true
			out[r.Condition] = e
			continue
		}
		add(r.Condition, r.ClearAfter.Duration, ruleWindow(r))
	}
	probe := func(typ string, period, timeout time.Duration, failures int) {
		// Raised by failures in a row each up to its timeout; cleared by
		// the next probe that succeeds.
		add(typ, period+timeout, time.Duration(failures)*period+timeout)
	}
	c := cri.DefaultConfig()
	probe(finding.ContainerRuntimeUnresponsive.Type, c.Period.Duration, c.Timeout.Duration, c.FailureThreshold)
	// The sandbox probe: SandboxFailureThreshold attempts SandboxRetry
	// apart, and after a failure the next one SandboxRetry later.
	add(finding.ContainerRuntimeUnresponsive.Type, cri.SandboxRetry+c.SandboxTimeout.Duration,
		time.Duration(cri.SandboxFailureThreshold-1)*cri.SandboxRetry+time.Duration(cri.SandboxFailureThreshold)*c.SandboxTimeout.Duration)
	k := kubelet.DefaultConfig()
	probe(finding.KubeletUnhealthy.Type, k.Period.Duration, k.Timeout.Duration, k.FailureThreshold)
	d := dns.DefaultConfig()
	probe(finding.ClusterDNSUnreachable.Type, d.Period.Duration, d.Timeout.Duration, d.FailureThreshold)
	n := nic.DefaultConfig()
	add(finding.NICDown.Type, n.Period.Duration, n.Period.Duration)
	// Flapping holds until the changes age out of the window.
	add(finding.NICFlapping.Type, n.FlapWindow.Duration+n.Period.Duration, n.FlapWindow.Duration)
	dk := disk.DefaultConfig()
	add(finding.DiskIOStuck.Type, dk.Period.Duration+dk.ProbeTimeout.Duration, max(dk.ProbeTimeout.Duration, dk.StuckWindow.Duration))
	add(finding.ReadonlyFilesystem.Type, dk.Period.Duration, dk.Period.Duration)
	return out
}

// ruleWindow is how long an episode may last while a rule raises its
// condition: the window its matches are counted in, none for a rule that
// fires on one line.
func ruleWindow(r logrules.Rule) time.Duration {
	if r.MinCount > 1 {
		return r.Window.Duration
	}
	return 0
}

// outlast is the least duration a consumer may wait on a nodeguard type
// for one short episode not to trigger it: the episode's length and its
// hold. Zero when the type holds only until reboot, where any wait is
// for a node that stays broken.
func (e episode) outlast() time.Duration { return e.hold + e.raise }

type unhealthyCondition struct {
	Type     string `json:"type"`
	Status   string `json:"status"`
	Duration string `json:"duration"`
}

func readConsumer(t *testing.T, name string, into any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(consumersDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// TestConsumerDurationsOutlastConditionSemantics: each duration in the
// shipped NodeHealthCheck waits longer on a nodeguard type than one short
// episode of its fault keeps the type True, by the agent's own defaults,
// so that a consumer remediates a node that stays broken and not one that
// had a flap. The NodeReadinessRule has no durations (it taints at once,
// and untaints when the type clears), so it only has to use nodeguard's
// polarity.
func TestConsumerDurationsOutlastConditionSemantics(t *testing.T) {
	model := episodes()
	catalog := map[string]bool{}
	for _, d := range finding.Catalog() {
		catalog[d.Type] = true
	}

	var nhc struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Selector            map[string]any       `json:"selector"`
			MinHealthy          string               `json:"minHealthy"`
			RemediationTemplate map[string]any       `json:"remediationTemplate"`
			UnhealthyConditions []unhealthyCondition `json:"unhealthyConditions"`
		} `json:"spec"`
	}
	readConsumer(t, "nodehealthcheck.yaml", &nhc)
	var ours int
	for _, uc := range nhc.Spec.UnhealthyConditions {
		d, err := time.ParseDuration(uc.Duration)
		if err != nil {
			t.Errorf("NodeHealthCheck %s=%s: duration %q: %v", uc.Type, uc.Status, uc.Duration, err)
			continue
		}
		if !catalog[uc.Type] {
			continue // the kubelet's Ready
		}
		ours++
		if uc.Status != "True" {
			t.Errorf("NodeHealthCheck %s=%s: nodeguard's types are True when bad", uc.Type, uc.Status)
		}
		e, ok := model[uc.Type]
		if !ok {
			t.Errorf("NodeHealthCheck acts on %s, which this test does not model: add its sources to episodes", uc.Type)
			continue
		}
		if d <= e.outlast() {
			t.Errorf("NodeHealthCheck waits %s on %s=True; one episode of its fault may last %s and hold it %s more: wait longer than %s",
				d, uc.Type, e.raise, e.hold, e.outlast())
		}
		t.Logf("NodeHealthCheck %s=True after %s; one episode holds it at most %s (until reboot from a source: %v)", uc.Type, d, e.outlast(), e.untilReboot)
	}
	if ours == 0 {
		t.Error("the NodeHealthCheck names none of nodeguard's condition types")
	}
	for _, status := range []string{"False", "Unknown"} {
		if !slices.ContainsFunc(nhc.Spec.UnhealthyConditions, func(u unhealthyCondition) bool { return u.Type == "Ready" && u.Status == status }) {
			t.Errorf("the NodeHealthCheck drops NodeHealthCheck's default Ready=%s: listing unhealthyConditions replaces the default", status)
		}
	}

	var nrr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			NodeSelector map[string]any `json:"nodeSelector"`
			Conditions   []struct {
				Type           string `json:"type"`
				RequiredStatus string `json:"requiredStatus"`
				DefaultStatus  string `json:"defaultStatus"`
			} `json:"conditions"`
			Taint           map[string]string `json:"taint"`
			EnforcementMode string            `json:"enforcementMode"`
		} `json:"spec"`
	}
	readConsumer(t, "nodereadinessrule.yaml", &nrr)
	for _, c := range nrr.Spec.Conditions {
		if !catalog[c.Type] || c.RequiredStatus != "False" {
			t.Errorf("NodeReadinessRule requires %s=%s, want one of nodeguard's types required False", c.Type, c.RequiredStatus)
		}
	}

	// Karpenter's tolerations are the cloud provider's, not the NodePool's:
	// nothing to check there. What one episode holds each aggregate for is
	// what docs/consumers.md compares them with.
	for _, a := range finding.Aggregates() {
		var longest time.Duration
		for _, src := range a.Sources {
			longest = max(longest, model[src.Type].outlast())
		}
		t.Logf("%s=False: one episode holds it at most %s", a.Type, longest)
	}
}

// TestConsumersDocMapping keeps the mapping table of docs/consumers.md in
// step with finding.Aggregates, its one owner, and has every other type of
// the catalog named in the table of types that go nowhere.
func TestConsumersDocMapping(t *testing.T) {
	path := filepath.Join(docsDir, "consumers.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A type's first row: the mapping table comes before the tables that
	// name the types again.
	rows := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if m := inlineCode.FindStringSubmatch(cells[0]); strings.HasPrefix(line, "| `") && m != nil && m[0] == cells[0] && rows[m[1]] == nil {
			rows[m[1]] = cells
		}
	}
	mapped := map[string]bool{}
	for _, a := range finding.Aggregates() {
		row, ok := rows[a.Type]
		if !ok || len(row) < 3 {
			t.Errorf("%s: no mapping row for %s", path, a.Type)
			continue
		}
		var want []string
		for _, src := range a.Sources {
			want = append(want, "`"+src.Type+"`")
			mapped[src.Type] = true
		}
		if row[1] != strings.Join(want, ", ") || row[2] != "`"+a.Reason+"`" {
			t.Errorf("%s: row for %s is %q, want sources %s and healthy reason %s", path, a.Type, row, strings.Join(want, ", "), a.Reason)
		}
	}
	for _, d := range append(finding.Catalog(), finding.Degraded) {
		if !mapped[d.Type] {
			if row, ok := rows[d.Type]; !ok || len(row) < 2 || !strings.Contains(row[1], " ") {
				t.Errorf("%s: %s is in no aggregate, and no row says why", path, d.Type)
			}
		}
	}
}
