package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/internal/testcontainerd"
	"github.com/nodeguard/nodeguard/pkg/criconn"
	"github.com/nodeguard/nodeguard/pkg/cripods"
)

// podRuntime starts a containerd that can run pods (the pause image
// imported, under the name it returns), and connects to it over CRI. Every
// pod it runs is removed when the test ends, before containerd stops.
func podRuntime(t *testing.T) (*testcontainerd.Containerd, internalapi.RuntimeService, string) {
	t.Helper()
	needRoot(t, "runs containerd and pods in it")
	ctd := startContainerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ctd.ImportPause(ctx); err != nil {
		t.Fatal(err)
	}
	pause := testcontainerd.PauseImage
	rt, err := ctd.Runtime(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rt.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := ctd.RemovePods(ctx); err != nil {
			t.Errorf("removing the test's pods: %v", err)
		}
	})
	return ctd, rt, pause
}

// randomUID is a pod UID as the API server makes them.
func randomUID() string {
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rand.Uint32(), rand.Uint32()&0xffff, rand.Uint32()&0xffff, rand.Uint32()&0xffff, rand.Uint64()&0xffffffffffff)
}

// cgroupParent is a cgroup path of the test's own for a pod with uid,
// shaped as the kubelet's cgroupfs driver makes them
// (/kubepods/burstable/pod<uid>), so that the kernel names the pod UID and
// container ID in what it reports of the pod's cgroups. Whatever is in it
// is killed, and its directories removed, in every hierarchy, when the test
// ends.
func cgroupParent(t *testing.T, uid string) string {
	t.Helper()
	top := fmt.Sprintf("/nodeguard-test-cri-%d-%d", os.Getpid(), rand.Uint32())
	t.Cleanup(func() { removeCgroupTree(t, top) })
	return top + "/kubepods/burstable/pod" + uid
}

// removeCgroupTree kills the processes left in cgroup path rel, in each
// hierarchy under /sys/fs/cgroup, and removes its directories deepest
// first.
func removeCgroupTree(t *testing.T, rel string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + rel)
	if _, err := os.Stat("/sys/fs/cgroup" + rel); err == nil {
		roots = append(roots, "/sys/fs/cgroup"+rel)
	}
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, dir := range dirs {
			if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
				for f := range strings.FieldsSeq(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			// A cgroup whose last task just died may take a moment to free.
			for try := 0; ; try++ {
				err := os.Remove(dir)
				if err == nil || os.IsNotExist(err) {
					break
				}
				if try == 50 {
					t.Errorf("removing cgroup %s: %v", dir, err)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// criPod is a pod sandbox run as the kubelet runs one, on the host's
// network: the test containerd runs no CNI plugin.
type criPod struct {
	id     string
	config *runtimeapi.PodSandboxConfig
}

func runCRIPod(t *testing.T, rt internalapi.RuntimeService, namespace, name, uid string) *criPod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	config := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Labels: map[string]string{
			"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid,
		},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent(t, uid),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	id, err := rt.RunPodSandbox(ctx, config, "")
	if err != nil {
		t.Fatalf("running pod sandbox %s/%s: %v", namespace, name, err)
	}
	return &criPod{id: id, config: config}
}

// createContainer creates a container of the pod from image, labelled as
// the kubelet labels its containers, and returns its ID.
func (p *criPod) createContainer(t *testing.T, rt internalapi.RuntimeService, name, image string, resources *runtimeapi.LinuxContainerResources) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := p.config.Metadata
	id, err := rt.CreateContainer(ctx, p.id, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Labels: map[string]string{
			"io.kubernetes.container.name": name, "io.kubernetes.pod.name": m.Name,
			"io.kubernetes.pod.namespace": m.Namespace, "io.kubernetes.pod.uid": m.Uid,
		},
		Linux: &runtimeapi.LinuxContainerConfig{Resources: resources},
	}, p.config)
	if err != nil {
		t.Fatalf("creating container %s in pod %s/%s: %v", name, m.Namespace, m.Name, err)
	}
	return id
}

// TestCRIPodNamesFromARealContainerd: the names an OOM kill's event gets
// come from a real containerd, for a container that has exited as well as
// a running one, and not at all, within the deadline, from one that hangs.
func TestCRIPodNamesFromARealContainerd(t *testing.T) {
	ctd, rt, image := podRuntime(t)
	uid := randomUID()
	pod := runCRIPod(t, rt, "ns1", "memhog", uid)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hog := pod.createContainer(t, rt, "hog", image, nil)
	// A container that ran and exited, as an OOM kill leaves it.
	if err := rt.StartContainer(ctx, hog); err != nil {
		t.Fatalf("starting container hog: %v", err)
	}
	if err := rt.StopContainer(ctx, hog, 10); err != nil {
		t.Fatalf("stopping container hog: %v", err)
	}
	if st, err := rt.ContainerStatus(ctx, hog, false); err != nil || st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("container hog after StopContainer: %v, %v; want exited", st.GetStatus().GetState(), err)
	}
	side := pod.createContainer(t, rt, "sidecar", image, nil)

	conn := criconn.New("unix://" + ctd.Socket)
	defer conn.Close()
	names := cripods.New(conn.Runtime(), cripods.Options{})
	defer names.Close()
	for _, tt := range []struct {
		what, uid, container string
		want                 string
		wantErr              error
	}{
		{"the exited container", uid, hog, "ns1/memhog hog", nil},
		{"a created container", uid, side, "ns1/memhog sidecar", nil},
		{"the pod's sandbox", uid, pod.id, "ns1/memhog ", nil},
		{"a pod the runtime does not know", randomUID(), hog, "/ ", cripods.ErrUnknown},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		ns, name, container, err := names.PodName(ctx, tt.uid, tt.container)
		cancel()
		if got := ns + "/" + name + " " + container; got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: PodName = %q, %v; want %q, %v", tt.what, got, err, tt.want, tt.wantErr)
		}
		t.Logf("%s: answered in %s", tt.what, time.Since(start))
	}

	// A hung runtime: the lookup gives up at its deadline.
	if err := ctd.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer ctd.Signal(syscall.SIGCONT)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	start := time.Now()
	if _, _, _, err := names.PodName(ctx2, randomUID(), ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("PodName with containerd stopped: %v, want the deadline", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("PodName with containerd stopped took %s, want about the 2s deadline", took)
	}
}
