package cripods

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime answers from what the test puts in it, and counts listings.
type fakeRuntime struct {
	mu         sync.Mutex
	sandboxes  []*runtimeapi.PodSandbox
	containers []*runtimeapi.Container
	// hang makes every listing wait for its context's end.
	hang bool
	// fail makes listings fail.
	fail     bool
	listings int
	filtered bool
}

func (f *fakeRuntime) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	f.listings++
	f.filtered = f.filtered || r.GetFilter() != nil
	hang, fail, out := f.hang, f.fail, f.sandboxes
	f.mu.Unlock()
	switch {
	case hang:
		<-ctx.Done()
		return nil, ctx.Err()
	case fail:
		return nil, errors.New("no socket")
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func (f *fakeRuntime) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest, _ ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filtered = f.filtered || r.GetFilter() != nil
	return &runtimeapi.ListContainersResponse{Containers: f.containers}, nil
}

func (f *fakeRuntime) addPod(uid, namespace, name, sandboxID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes = append(f.sandboxes, &runtimeapi.PodSandbox{
		Id:       sandboxID,
		Metadata: &runtimeapi.PodSandboxMetadata{Uid: uid, Namespace: namespace, Name: name},
		State:    runtimeapi.PodSandboxState_SANDBOX_READY,
	})
}

func (f *fakeRuntime) addContainer(id, sandboxID, podUID, name string, state runtimeapi.ContainerState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	labels := map[string]string{"io.kubernetes.container.name": name}
	if podUID != "" {
		labels["io.kubernetes.pod.uid"] = podUID
	}
	f.containers = append(f.containers, &runtimeapi.Container{
		Id: id, PodSandboxId: sandboxID, Metadata: &runtimeapi.ContainerMetadata{Name: name}, State: state, Labels: labels,
	})
}

func (f *fakeRuntime) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listings
}

func newNames(f *fakeRuntime) *Names {
	return New(f, Options{})
}

func TestPodName(t *testing.T) {
	const (
		uid, other = "11111111-2222-3333-4444-555555555555", "99999999-2222-3333-4444-555555555555"
		sandbox    = "sb1"
		cid        = "c1c1c1"
	)
	for _, tt := range []struct {
		name             string
		setup            func(f *fakeRuntime)
		podUID, contID   string
		wantNS, wantName string
		wantContainer    string
		wantErr          error
	}{
		{
			name: "a running container",
			setup: func(f *fakeRuntime) {
				f.addPod(uid, "ns1", "memhog", sandbox)
				f.addContainer(cid, sandbox, uid, "hog", runtimeapi.ContainerState_CONTAINER_RUNNING)
			},
			podUID: uid, contID: cid, wantNS: "ns1", wantName: "memhog", wantContainer: "hog",
		},
		{
			name: "an exited container, as an OOM kill leaves it",
			setup: func(f *fakeRuntime) {
				f.addPod(uid, "ns1", "memhog", sandbox)
				f.addContainer(cid, sandbox, uid, "hog", runtimeapi.ContainerState_CONTAINER_EXITED)
			},
			podUID: uid, contID: cid, wantNS: "ns1", wantName: "memhog", wantContainer: "hog",
		},
		{
			name: "a container without the pod UID label, found by its sandbox",
			setup: func(f *fakeRuntime) {
				f.addPod(uid, "ns1", "memhog", sandbox)
				f.addContainer(cid, sandbox, "", "hog", runtimeapi.ContainerState_CONTAINER_EXITED)
			},
			podUID: uid, contID: cid, wantNS: "ns1", wantName: "memhog", wantContainer: "hog",
		},
		{
			name:   "a pod-level cgroup: no container ID",
			setup:  func(f *fakeRuntime) { f.addPod(uid, "ns1", "memhog", sandbox) },
			podUID: uid, wantNS: "ns1", wantName: "memhog",
		},
		{
			name:   "the sandbox's own cgroup",
			setup:  func(f *fakeRuntime) { f.addPod(uid, "ns1", "memhog", sandbox) },
			podUID: uid, contID: sandbox, wantNS: "ns1", wantName: "memhog",
		},
		{
			name:   "a container the runtime has removed",
			setup:  func(f *fakeRuntime) { f.addPod(uid, "ns1", "memhog", sandbox) },
			podUID: uid, contID: cid, wantNS: "ns1", wantName: "memhog",
		},
		{
			name: "a container of another pod is not named",
			setup: func(f *fakeRuntime) {
				f.addPod(uid, "ns1", "memhog", sandbox)
				f.addPod(other, "ns2", "other", "sb2")
				f.addContainer(cid, "sb2", other, "theirs", runtimeapi.ContainerState_CONTAINER_RUNNING)
			},
			podUID: uid, contID: cid, wantNS: "ns1", wantName: "memhog",
		},
		{
			name:   "a pod the runtime does not know",
			setup:  func(f *fakeRuntime) { f.addPod(other, "ns2", "other", "sb2") },
			podUID: uid, contID: cid,
			wantErr: ErrUnknown,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeRuntime{}
				tt.setup(f)
				n := newNames(f)
				defer n.Close()
				ns, name, cont, err := n.PodName(context.Background(), tt.podUID, tt.contID)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("PodName: %v, want %v", err, tt.wantErr)
				}
				if ns != tt.wantNS || name != tt.wantName || cont != tt.wantContainer {
					t.Errorf("PodName = %s/%s container %q, want %s/%s container %q", ns, name, cont, tt.wantNS, tt.wantName, tt.wantContainer)
				}
				if got := f.count(); got != 1 {
					t.Errorf("%d listings, want 1", got)
				}
				if f.filtered {
					t.Error("a listing had a filter: exited containers must be listed too")
				}
			})
		})
	}
}

func TestPodNameAsksOnlyAboutWhatItDoesNotKnow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRuntime{}
		f.addPod("uid-a", "ns", "a", "sb-a")
		f.addContainer("c-a", "sb-a", "uid-a", "app", runtimeapi.ContainerState_CONTAINER_RUNNING)
		n := newNames(f)
		defer n.Close()
		ctx := context.Background()
		for range 3 {
			if _, name, _, err := n.PodName(ctx, "uid-a", "c-a"); err != nil || name != "a" {
				t.Fatalf("PodName(uid-a) = %q, %v", name, err)
			}
		}
		if got := f.count(); got != 1 {
			t.Errorf("%d listings for one pod asked about three times, want 1", got)
		}

		// A pod started since is listed afresh, a second after the last
		// listing began.
		f.addPod("uid-b", "ns", "b", "sb-b")
		start := time.Now()
		if _, name, _, err := n.PodName(ctx, "uid-b", ""); err != nil || name != "b" {
			t.Fatalf("PodName(uid-b) = %q, %v", name, err)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("the second listing came %s after the first, want 1s", took)
		}
		if got := f.count(); got != 2 {
			t.Errorf("%d listings, want 2", got)
		}
	})
}

// An OOM storm in pods the runtime does not know costs it one listing a
// second, however many ask.
func TestPodNameListsAtMostOncePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRuntime{}
		n := newNames(f)
		defer n.Close()
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 100 * time.Millisecond) // 5 s of kills
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if _, _, _, err := n.PodName(ctx, fmt.Sprintf("uid-%d", i), ""); !errors.Is(err, ErrUnknown) {
					t.Errorf("PodName(uid-%d): %v, want ErrUnknown", i, err)
				}
			})
		}
		wg.Wait()
		// One at 0 s and one a second after each, to the last ask at 4.9 s.
		if got := f.count(); got < 5 || got > 6 {
			t.Errorf("%d listings for 50 kills in 5 s, want 5 or 6", got)
		}
	})
}

func TestPodNameGivesUpAtTheCallersDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRuntime{hang: true}
		f.addPod("uid-a", "ns", "a", "sb-a")
		n := New(f, Options{Timeout: 5 * time.Second})
		defer n.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, _, _, err := n.PodName(ctx, "uid-a", "")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("PodName of a hung runtime: %v, want the deadline", err)
		}
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("PodName returned after %s, want at the caller's 2s", took)
		}
		// The listing, bounded by Timeout, ends on its own; the next one
		// that answers is used.
		time.Sleep(4 * time.Second)
		f.mu.Lock()
		f.hang = false
		f.mu.Unlock()
		if _, name, _, err := n.PodName(context.Background(), "uid-a", ""); err != nil || name != "a" {
			t.Errorf("PodName once the runtime answers = %q, %v", name, err)
		}
	})
}

// A listing that failed is tried again at the next question.
func TestPodNameAsksAgainAfterAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeRuntime{fail: true}
		f.addPod("uid-a", "ns", "a", "sb-a")
		n := newNames(f)
		defer n.Close()
		if _, _, _, err := n.PodName(context.Background(), "uid-a", ""); err == nil {
			t.Fatal("PodName with no runtime succeeded")
		}
		f.mu.Lock()
		f.fail = false
		f.mu.Unlock()
		if _, name, _, err := n.PodName(context.Background(), "uid-a", ""); err != nil || name != "a" {
			t.Errorf("PodName once the runtime is there = %q, %v", name, err)
		}
	})
}
