package testnode

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Exec runs args in a running container, by its ID as the kubelet's pod
// status gives it (with or without "containerd://"), through the node's
// containerd, as `kubectl exec` does through the kubelet and CRI: with the
// container's own user, capabilities, mounts and namespaces. It returns the
// command's standard output, binary-safe; its standard error is in the
// error when it fails.
func (n *Node) Exec(ctx context.Context, containerID string, args ...string) ([]byte, error) {
	id := strings.TrimPrefix(containerID, "containerd://")
	// The FIFOs under the node's own directory: ctr's default,
	// /run/containerd/fifo, is the host's /run, which the node's containerd
	// (in a mount namespace of its own, with its own /run) cannot see.
	fifos := filepath.Join(n.Dir, "ctr-fifo")
	if err := os.MkdirAll(fifos, 0o700); err != nil {
		return nil, fmt.Errorf("making the FIFO directory for ctr: %w", err)
	}
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.ContainerdSocket, "--namespace", "k8s.io",
		"tasks", "exec", "--fifo-dir", fifos, "--exec-id", "e2e-" + randomID(), id}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("exec %v in container %s: %w\n%s", args, id, err, stderr.String())
	}
	return stdout.Bytes(), nil
}
