package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConsumerObjectsAreAcceptedWithTheirRealCRDs installs each consumer's
// own CRD (testdata/consumers, copied from its repository; see NOTICE),
// waits until it is Established, and creates the object deploy/consumers
// ships for it, with the server's strict field validation: a field the
// CRD does not know, a bad enum or a broken CEL rule fails here.
func TestConsumerObjectsAreAcceptedWithTheirRealCRDs(t *testing.T) {
	c := needCluster(t)
	for _, tc := range []struct {
		crdFile, crd, object, resource string
	}{
		{"remediation.medik8s.io_nodehealthchecks.yaml", "nodehealthchecks.remediation.medik8s.io", "nodehealthcheck.yaml", "nodehealthcheck.remediation.medik8s.io/nodeguard"},
		{"readiness.node.x-k8s.io_nodereadinessrules.yaml", "nodereadinessrules.readiness.node.x-k8s.io", "nodereadinessrule.yaml", "nodereadinessrule.readiness.node.x-k8s.io/nodeguard"},
		{"karpenter.sh_nodepools.yaml", "nodepools.karpenter.sh", "karpenter-nodepool.yaml", "nodepool.karpenter.sh/nodeguard-repaired"},
	} {
		t.Run(tc.object, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			crdPath, _ := filepath.Abs(filepath.Join("testdata/consumers", tc.crdFile))
			objPath, _ := filepath.Abs(filepath.Join("../../deploy/consumers", tc.object))
			// create, not apply: the last-applied annotation of a large CRD
			// is no part of what is tested.
			if out, err := c.Kubectl(ctx, "create", "-f", crdPath); err != nil {
				t.Fatalf("installing %s: %v\n%s", tc.crdFile, err, out)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if out, err := c.Kubectl(ctx, "delete", "--ignore-not-found", "--wait=true", "-f", crdPath); err != nil {
					t.Logf("deleting the CRD %s: %v\n%s", tc.crd, err, out)
				}
			})
			start := time.Now()
			if out, err := c.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+tc.crd); err != nil {
				t.Fatalf("CRD %s not Established: %v\n%s", tc.crd, err, out)
			}
			t.Logf("CRD %s Established after %s", tc.crd, time.Since(start).Round(time.Millisecond))
			// A freshly Established CRD may be a moment from being served
			// with its schema: retry only on "no matches for kind".
			var out string
			var err error
			for {
				out, err = c.Kubectl(ctx, "create", "--validate=strict", "-f", objPath)
				if err == nil || !strings.Contains(out, "no matches for kind") || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("creating %s: %v\n%s", tc.object, err, out)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c.Kubectl(ctx, "delete", "--ignore-not-found", "-f", objPath)
			})
			// The validation is real: the same object with a field its CRD
			// does not know is refused.
			obj, err := os.ReadFile(objPath)
			if err != nil {
				t.Fatal(err)
			}
			bad := filepath.Join(t.TempDir(), tc.object)
			if err := os.WriteFile(bad, []byte(strings.Replace(string(obj), "\nspec:\n", "\nspec:\n  nodeguardUnknownField: 1\n", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := c.Kubectl(ctx, "create", "--validate=strict", "--dry-run=server", "-f", bad); err == nil || !strings.Contains(out, "nodeguardUnknownField") {
				t.Errorf("%s with an unknown field: %v, want refused naming it:\n%s", tc.object, err, out)
			}
			got, err := c.Kubectl(ctx, "get", tc.resource, "-o", "yaml")
			if err != nil {
				t.Fatalf("reading %s back: %v\n%s", tc.resource, err, got)
			}
			// What the server stored holds what was sent: no field pruned
			// as unknown to the schema.
			for _, want := range map[string][]string{
				"nodehealthcheck.yaml":    {"type: FrequentUnregisterNetDevice", "duration: 45m", "minHealthy: 51%"},
				"nodereadinessrule.yaml":  {"type: DiskIOStuck", "key: readiness.k8s.io/nodeguard", "enforcementMode: continuous"},
				"karpenter-nodepool.yaml": {"kind: EC2NodeClass", "consolidateAfter: 1m"},
			}[tc.object] {
				if !strings.Contains(got, want) {
					t.Errorf("%s as stored lacks %q:\n%s", tc.resource, want, got)
				}
			}
		})
	}
}
