// Package e2e runs nodeguard as what it is: a DaemonSet pod, started by a
// real kubelet from nodeguard's own image, on a real one-node cluster on
// this machine (internal/testnode), deployed from deploy/ and the Helm chart
// changed only in the image reference. The tests share one node and run in
// file order: each leaves the DaemonSet as the next expects it.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/nodeguard/nodeguard/internal/testnode"
)

// imageRef is the tag the tests deploy: not latest, so that the kubelet
// takes the imported image rather than pull.
const imageRef = "docker.io/nodeguard/nodeguard:e2e"

var (
	node    *testnode.Node
	nodeErr error
	// repo is the module's root, where deploy/ is.
	repo string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repo = filepath.Join(filepath.Dir(file), "..", "..")
	code := func() int {
		ctx := context.Background()
		node, nodeErr = testnode.Start(ctx, testnode.Options{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
		if nodeErr != nil {
			return m.Run()
		}
		defer node.Stop()
		defer os.RemoveAll(filepath.Join(os.TempDir(), "nodeguard-e2e-overlay-"+strconv.Itoa(os.Getpid())))
		if nodeErr = buildImage(ctx); nodeErr != nil {
			return m.Run()
		}
		return m.Run()
	}()
	os.Exit(code)
}

// needNode returns the node, skipping where the harness cannot run here and
// failing where it should have and did not.
func needNode(t *testing.T) *testnode.Node {
	t.Helper()
	if errors.Is(nodeErr, testnode.ErrSkip) {
		t.Skip(nodeErr)
	}
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	return node
}

func buildImage(ctx context.Context) error { return node.ImportNodeguard(ctx, repo, imageRef) }
