package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/internal/testnode"
)

// evidenceOfTheHungTask follows writeHungTask's record (a hung containerd
// task of pid) through the evidence: KernelDeadlock turning True captured a
// directory under the pod's stateDir, an EvidenceCaptured event on the Node
// names it, and `nodeguard bundle -o -`, run inside the agent's container
// as `kubectl exec` would run it, writes a tar.gz whose capture of
// KernelDeadlock holds the record's line, read back from the journal.
func evidenceOfTheHungTask(t *testing.T, n *testnode.Node, pid int) {
	t.Helper()
	var dir string
	waitFor(t, time.Minute, "an EvidenceCaptured event for KernelDeadlock", func() (bool, string) {
		evs := nodeEvents(t, n, "EvidenceCaptured")
		for _, e := range evs {
			if m := regexp.MustCompile(`KernelDeadlock=True .*captured in (\S+)`).FindStringSubmatch(e.Message); m != nil {
				dir = m[1]
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d EvidenceCaptured events", len(evs))
	})
	t.Logf("evidence of KernelDeadlock in the pod at %s", dir)
	if !strings.HasPrefix(dir, "/var/lib/nodeguard/evidence/") {
		t.Errorf("the evidence is in %s, not under deploy/'s stateDir /var/lib/nodeguard", dir)
	}
	// stateDir is a hostPath: the directory is on the node too.
	if _, err := os.Stat(n.HostPath(dir)); err != nil {
		t.Errorf("the node has no %s: %v", n.HostPath(dir), err)
	}

	pod := currentPod(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.Exec(ctx, pod.Status.ContainerStatuses[0].ContainerID,
		"/usr/bin/nodeguard", "bundle", "--config=/etc/nodeguard/config.yaml", "--wait=2s", "-o", "-")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	gz, err := gzip.NewReader(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("the bundle (%d bytes) is not gzip: %v", len(out), err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the bundle is not a tar: %v", err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
	}
	t.Logf("bundle from inside the pod: %d bytes, %d files", len(out), len(files))
	for _, want := range []string{"version.txt", "config.yaml", "check.txt", "check.json"} {
		if _, ok := files[want]; !ok {
			t.Errorf("the bundle has no %s", want)
		}
	}
	record := fmt.Sprintf("INFO: task containerd:%d blocked for more than 120 seconds.", pid)
	kernel, ok := files[path.Join("evidence", path.Base(dir), "kernel.log")]
	if !ok {
		t.Fatalf("the bundle has no evidence/%s/kernel.log", path.Base(dir))
	}
	if !strings.Contains(kernel, record) {
		t.Errorf("evidence/%s/kernel.log does not hold %q:\n%s", path.Base(dir), record, tail(kernel))
	}
	if c := files[path.Join("evidence", path.Base(dir), "condition.json")]; !strings.Contains(c, `"condition": "KernelDeadlock"`) {
		t.Errorf("evidence/%s/condition.json:\n%s", path.Base(dir), c)
	}
}
