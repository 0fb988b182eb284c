package testnode

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
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
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.ContainerdSocket, "--namespace", "k8s.io",
		"tasks", "exec", "--exec-id", "e2e-" + randomID(), id}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("exec %v in container %s: %w\n%s", args, id, err, stderr.String())
	}
	return stdout.Bytes(), nil
}
