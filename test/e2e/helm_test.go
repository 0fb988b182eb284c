package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The last file in test order: its cleanup uninstalls the DaemonSet that
// the tests before it share.

// TestHelmDaemonSet replaces the kustomize deployment by the Helm chart
// with default values but the image, and checks the same basics.
func TestHelmDaemonSet(t *testing.T) {
	n := needNode(t)
	ctx := context.Background()
	helm := filepath.Join(n.Cluster.BinDir, "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Skipf("no helm in %s", n.Cluster.BinDir)
	}
	if out, err := n.Kubectl(ctx, "delete", "-k", kustomizeOverlay(t), "--ignore-not-found", "--wait=true"); err != nil {
		t.Fatalf("removing the kustomize deployment: %v\n%s", err, out)
	}
	waitFor(t, 2*time.Minute, "the kustomize pods gone", func() (bool, string) {
		pods, err := n.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, fmt.Sprintf("%v", err)
	})
	cmd := n.HelmInstallArgs(repo, imageRef)
	if b, err := execOut(ctx, helm, cmd...); err != nil {
		t.Fatalf("helm install: %v\n%s", err, b)
	}
	t.Cleanup(func() {
		execOut(context.Background(), helm, "--kubeconfig", n.Cluster.Kubeconfig, "uninstall", "nodeguard", "--namespace", namespace, "--wait")
	})
	pod := waitDaemonSetReady(t, n, "")
	t.Logf("Helm's pod %s is Ready", pod.Name)
	if n.Journald {
		waitLog(t, n, pod, `"reading the kernel log".*"source":"journal"`)
	}
	owned := ownedConditions(t)
	for _, typ := range owned {
		c := condition(t, n, typ)
		if c.Status == corev1.ConditionUnknown || c.Status == "" {
			t.Errorf("%s is %q under the Helm chart", typ, c.Status)
		}
	}
	if c := condition(t, n, "NodeguardCheckStuck"); c.Status == corev1.ConditionTrue {
		t.Errorf("NodeguardCheckStuck is True: %s", c.Message)
	}
}
