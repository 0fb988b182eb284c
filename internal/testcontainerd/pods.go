package testcontainerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
	internalapi "k8s.io/cri-api/pkg/apis"
	criclient "k8s.io/cri-client/pkg"

	"github.com/nodeguard/nodeguard/internal/imagebuild"
)

// Runtime connects to containerd's CRI runtime service, as the kubelet
// does.
func (c *Containerd) Runtime(ctx context.Context) (internalapi.RuntimeService, error) {
	rt, err := criclient.NewRemoteRuntimeServiceBuilder().
		WithEndpoint("unix://" + c.Socket).
		WithConnectionTimeout(10 * time.Second).
		WithTracerProvider(trace.TracerProvider(nil)).
		Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd's CRI service: %w", err)
	}
	return rt, nil
}

// ImportProgram builds pkg (a main package of nodeguard's module, such as
// "./hack/testpod") into the image spec describes, named ref, and imports
// it where CRI finds images.
func (c *Containerd) ImportProgram(ctx context.Context, spec imagebuild.Spec, pkg, ref string) error {
	dir, err := os.MkdirTemp(c.Dir, "image")
	if err != nil {
		return fmt.Errorf("making a directory for the image of %s: %w", pkg, err)
	}
	defer os.RemoveAll(dir)
	archive, err := imagebuild.BuildProgram(ctx, dir, spec, pkg, ref)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.Socket, "--namespace", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w\n%s", ref, err, out)
	}
	return nil
}

// RemovePods stops and removes every pod sandbox, and so its containers,
// shims and mounts, so that Close leaves nothing running. If containerd
// cannot do it, the shims it started are killed and the mounts under its
// directory detached instead; the containers' own processes are the
// caller's to kill, from the cgroups it gave them.
func (c *Containerd) RemovePods(ctx context.Context) error {
	err := c.removePods(ctx)
	if err != nil {
		c.killShims()
		c.detachMounts()
	}
	return err
}

func (c *Containerd) removePods(ctx context.Context) error {
	rt, err := c.Runtime(ctx)
	if err != nil {
		return err
	}
	defer rt.Close(context.Background())
	sandboxes, err := rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return fmt.Errorf("listing pod sandboxes: %w", err)
	}
	var errs []error
	for _, s := range sandboxes {
		if err := rt.StopPodSandbox(ctx, s.GetId()); err != nil {
			errs = append(errs, fmt.Errorf("stopping pod sandbox %s: %w", s.GetId(), err))
		}
		if err := rt.RemovePodSandbox(ctx, s.GetId()); err != nil {
			errs = append(errs, fmt.Errorf("removing pod sandbox %s: %w", s.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

// killShims kills the runc shims serving this containerd, found by the
// socket address each was started with.
func (c *Containerd) killShims() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" || !slices.Contains(args, c.Socket) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// detachMounts unmounts, lazily, what containerd left mounted in its
// directory (sandboxes' /dev/shm, containers' root filesystems), deepest
// first, so that its removal does not stop at them.
func (c *Containerd) detachMounts() {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var under []string
	for line := range strings.SplitSeq(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && strings.HasPrefix(fields[4], c.Dir+"/") {
			under = append(under, fields[4])
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	for _, m := range under {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}
