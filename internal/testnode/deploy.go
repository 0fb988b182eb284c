package testnode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nodeguard/nodeguard/internal/imagebuild"
)

// ImportNodeguard builds nodeguard from the module at repo as `make image`
// does (with the journal reader where libsystemd's headers are), makes its
// image and imports it into the node's containerd as ref.
func (n *Node) ImportNodeguard(ctx context.Context, repo, ref string) error {
	dir, err := os.MkdirTemp("", "nodeguard-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "nodeguard")
	tags := ""
	if _, err := os.Stat("/usr/include/systemd/sd-journal.h"); err == nil {
		tags = "journald"
	}
	build := exec.CommandContext(ctx, "go", "build", "-tags", tags, "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/agent")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building nodeguard: %w\n%s", err, out)
	}
	spec := imagebuild.Nodeguard
	spec.Labels = imagebuild.Labels(spec, ref[strings.LastIndex(ref, ":")+1:], "")
	archive := filepath.Join(dir, "image.tar")
	if _, err := imagebuild.Write(spec, bin, archive, ref); err != nil {
		return err
	}
	return n.ImportImage(ctx, archive)
}

// WriteOverlay writes into dir a kustomization of repo's deploy/ with only
// the image reference changed to ref.
func WriteOverlay(dir, repo, ref string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// kustomize takes no absolute path for a base.
	base, err := filepath.Rel(dir, filepath.Join(repo, "deploy"))
	if err != nil {
		return err
	}
	i := strings.LastIndex(ref, ":")
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: ghcr.io/nodeguard/nodeguard
    newName: %s
    newTag: %s
`, base, ref[:i], ref[i+1:])
	return os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644)
}

// HelmInstallArgs are the arguments of `helm install` for repo's chart with
// default values but the image, into the nodeguard namespace.
func (n *Node) HelmInstallArgs(repo, ref string) []string {
	i := strings.LastIndex(ref, ":")
	return []string{"--kubeconfig", n.Cluster.Kubeconfig, "install", "nodeguard", filepath.Join(repo, "deploy/helm/nodeguard"),
		"--namespace", "nodeguard", "--create-namespace",
		"--set", "image.repository=" + ref[:i], "--set", "image.tag=" + ref[i+1:], "--wait", "--timeout", "3m"}
}

// PodCgroup is the host path of the cgroup of the pod with uid in the
// cgroup v1 hierarchy named (memory, cpuacct, cpu, pids): the kubelet's
// cgroupfs driver puts a Guaranteed pod at kubepods/pod<UID> and the others
// under their QoS class, kubepods/burstable/pod<UID>.
func (n *Node) PodCgroup(hierarchy, uid string) (string, error) {
	base := filepath.Join("/sys/fs/cgroup", hierarchy, n.CgroupRoot, "kubepods")
	paths, _ := filepath.Glob(filepath.Join(base, "*", "pod"+uid))
	if len(paths) == 0 {
		paths, _ = filepath.Glob(filepath.Join(base, "pod"+uid))
	}
	if len(paths) != 1 {
		return "", fmt.Errorf("no cgroup v1 %s cgroup for pod %s under %s (found %v)", hierarchy, uid, base, paths)
	}
	return paths[0], nil
}
