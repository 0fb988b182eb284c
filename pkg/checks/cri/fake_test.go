package cri

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime is a CRI server on a unix socket that keeps sandboxes and
// images in memory and fails or hangs the calls a test names, so that the
// check's real gRPC clients, deadlines and status codes are what the tests
// exercise.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	mu        sync.Mutex
	calls     []string
	sandboxes map[string]*runtimeapi.PodSandbox
	n         int
	// images by each of their tags.
	images map[string]*runtimeapi.Image
	// info is Status(verbose)'s.
	info map[string]string
	// runtimeConfig answers RuntimeConfig; nil answers Unimplemented.
	runtimeConfig *runtimeapi.RuntimeConfigResponse
	// errs holds what a method answers instead of doing its work.
	errs map[string]error
	// hang names methods that answer only when their caller gives up.
	hang map[string]bool
	// createOnFailure: RunPodSandbox makes its sandbox even when it fails
	// or hangs, as one the client gave up on may.
	createOnFailure bool
	// configs are the RunPodSandbox requests' sandbox configs.
	configs []*runtimeapi.PodSandboxConfig
	// conditions are what Status reports; nil reports RuntimeReady and
	// NetworkReady true.
	conditions []*runtimeapi.RuntimeCondition
	// unfiltered counts ListPodSandbox calls with no label selector.
	unfiltered int
}

type fakeImages struct {
	runtimeapi.UnimplementedImageServiceServer
	f *fakeRuntime
}

// startFake serves a fake runtime until the test ends and returns it and
// its endpoint.
func startFake(t *testing.T) (*fakeRuntime, string) {
	t.Helper()
	f := &fakeRuntime{
		sandboxes: map[string]*runtimeapi.PodSandbox{},
		images:    map[string]*runtimeapi.Image{},
		info:      map[string]string{},
		errs:      map[string]error{},
		hang:      map[string]bool{},
	}
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, f)
	runtimeapi.RegisterImageServiceServer(srv, &fakeImages{f: f})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return f, "unix://" + sock
}

// enter records a call and says how it must end: with an error (hang
// waits for the caller to give up first), or nil to do its work.
func (f *fakeRuntime) enter(ctx context.Context, method string) error {
	f.mu.Lock()
	f.calls = append(f.calls, method)
	err, hang := f.errs[method], f.hang[method]
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return err
}

func (f *fakeRuntime) called(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == method {
			n++
		}
	}
	return n
}

// listedAll says whether a ListPodSandbox asked for every sandbox.
func (f *fakeRuntime) listedAll() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unfiltered > 0
}

// set changes the fake under its lock.
func (f *fakeRuntime) set(fn func(f *fakeRuntime)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeRuntime) sandboxIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.sandboxes {
		ids = append(ids, id)
	}
	return ids
}

// addSandbox puts a sandbox in the runtime, as another client made it.
func (f *fakeRuntime) addSandbox(name, namespace, uid string, labels map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addLocked(&runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		Labels:   labels,
	})
}

func (f *fakeRuntime) addLocked(cfg *runtimeapi.PodSandboxConfig) string {
	f.n++
	id := fmt.Sprintf("%064x", f.n)
	f.sandboxes[id] = &runtimeapi.PodSandbox{Id: id, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), State: runtimeapi.PodSandboxState_SANDBOX_READY}
	return id
}

// addImage puts an image in the runtime; call it inside set.
func (f *fakeRuntime) addImage(tag string, pinned bool) {
	f.images[tag] = &runtimeapi.Image{Id: "sha256:" + tag, RepoTags: []string{tag}, Size: 1, Pinned: pinned}
}

func (f *fakeRuntime) Version(ctx context.Context, _ *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	if err := f.enter(ctx, "Version"); err != nil {
		return nil, err
	}
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "fake", RuntimeVersion: "1", RuntimeApiVersion: "v1"}, nil
}

func (f *fakeRuntime) Status(ctx context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	if err := f.enter(ctx, "Status"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	conds := f.conditions
	if conds == nil {
		conds = []*runtimeapi.RuntimeCondition{{Type: runtimeapi.RuntimeReady, Status: true}, {Type: runtimeapi.NetworkReady, Status: true}}
	}
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: conds}}
	if r.GetVerbose() {
		resp.Info = f.info
	}
	return resp, nil
}

func (f *fakeRuntime) RuntimeConfig(ctx context.Context, _ *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	if err := f.enter(ctx, "RuntimeConfig"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runtimeConfig == nil {
		return nil, status.Error(codes.Unimplemented, "unknown method RuntimeConfig")
	}
	return f.runtimeConfig, nil
}

func (f *fakeRuntime) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	if err := f.enter(ctx, "ListPodSandbox"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(r.GetFilter().GetLabelSelector()) == 0 {
		f.unfiltered++
	}
	resp := &runtimeapi.ListPodSandboxResponse{}
outer:
	for _, sb := range f.sandboxes {
		for k, v := range r.GetFilter().GetLabelSelector() {
			if sb.Labels[k] != v {
				continue outer
			}
		}
		// A copy: gRPC encodes the answer after the lock is released,
		// while StopPodSandbox may change the stored sandbox.
		resp.Items = append(resp.Items, proto.Clone(sb).(*runtimeapi.PodSandbox))
	}
	return resp, nil
}

func (f *fakeRuntime) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	f.mu.Lock()
	f.configs = append(f.configs, r.GetConfig())
	if f.createOnFailure && (f.errs["RunPodSandbox"] != nil || f.hang["RunPodSandbox"]) {
		f.addLocked(r.GetConfig())
	}
	f.mu.Unlock()
	if err := f.enter(ctx, "RunPodSandbox"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: f.addLocked(r.GetConfig())}, nil
}

func (f *fakeRuntime) StopPodSandbox(ctx context.Context, r *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if err := f.enter(ctx, "StopPodSandbox"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sandboxes[r.GetPodSandboxId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "sandbox %q not found", r.GetPodSandboxId())
	}
	sb.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox told to answer NotFound plays the kubelet's GC having
// removed the sandbox just before.
func (f *fakeRuntime) RemovePodSandbox(ctx context.Context, r *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	err := f.enter(ctx, "RemovePodSandbox")
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sandboxes, r.GetPodSandboxId())
	return &runtimeapi.RemovePodSandboxResponse{}, err
}

func (i *fakeImages) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	if err := i.f.enter(ctx, "ImageStatus"); err != nil {
		return nil, err
	}
	i.f.mu.Lock()
	defer i.f.mu.Unlock()
	return &runtimeapi.ImageStatusResponse{Image: i.f.images[r.GetImage().GetImage()]}, nil
}

func (i *fakeImages) ListImages(ctx context.Context, _ *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	if err := i.f.enter(ctx, "ListImages"); err != nil {
		return nil, err
	}
	i.f.mu.Lock()
	defer i.f.mu.Unlock()
	resp := &runtimeapi.ListImagesResponse{}
	for _, img := range i.f.images {
		resp.Images = append(resp.Images, img)
	}
	return resp, nil
}
