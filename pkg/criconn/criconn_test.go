package criconn

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtime is a CRI server that answers Version, and hangs it while hang
// is set.
type runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	hang atomic.Bool
}

func (r *runtime) Version(ctx context.Context, _ *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	if r.hang.Load() {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &runtimeapi.VersionResponse{RuntimeName: "fake", RuntimeApiVersion: "v1"}, nil
}

type images struct {
	runtimeapi.UnimplementedImageServiceServer
}

func (images) ListImages(context.Context, *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return &runtimeapi.ListImagesResponse{}, nil
}

// serve serves r on sock until the returned stop is called (or the test
// ends), removing the socket as a runtime that exits does.
func serve(t *testing.T, sock string, r *runtime) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, r)
	runtimeapi.RegisterImageServiceServer(srv, images{})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return srv.Stop
}

func version(c *Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := c.Runtime().Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
	return err
}

func TestOneConnectionForEveryUser(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cri.sock")
	serve(t, sock, &runtime{})
	for _, endpoint := range []string{"unix://" + sock, sock} {
		c := New(endpoint)
		if c.Dials() != 0 {
			t.Fatalf("%s: dialled before the first call", endpoint)
		}
		for range 3 {
			if err := version(c, 2*time.Second); err != nil {
				t.Fatalf("%s: Version: %v", endpoint, err)
			}
			if _, err := c.Images().ListImages(context.Background(), &runtimeapi.ListImagesRequest{}); err != nil {
				t.Fatalf("%s: ListImages: %v", endpoint, err)
			}
		}
		if got := c.Dials(); got != 1 {
			t.Errorf("%s: %d dials for six calls of two services, want 1", endpoint, got)
		}
		c.Close()
	}
}

func TestFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		// break_ makes the runtime fail after a first call that works; it
		// returns how to mend it, or nil when it stays broken.
		break_ func(t *testing.T, sock string, r *runtime, stop func()) (mend func())
		want   codes.Code
		// dials is how many dials the failing call and one after the mend
		// took in all, the first call's included.
		dials int
	}{{
		name: "a runtime that exits and comes back is dialled again at the next call",
		break_: func(t *testing.T, sock string, r *runtime, stop func()) func() {
			stop()
			return func() { serve(t, sock, r) }
		},
		want: codes.Unavailable, dials: 2,
	}, {
		name: "a hung runtime keeps its connection; the call ends at its deadline",
		break_: func(t *testing.T, sock string, r *runtime, stop func()) func() {
			r.hang.Store(true)
			return func() { r.hang.Store(false) }
		},
		want: codes.DeadlineExceeded, dials: 1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "cri.sock")
			r := &runtime{}
			stop := serve(t, sock, r)
			c := New("unix://" + sock)
			defer c.Close()
			if err := version(c, 2*time.Second); err != nil {
				t.Fatalf("Version: %v", err)
			}
			mend := tc.break_(t, sock, r, stop)
			start := time.Now()
			if err := version(c, 500*time.Millisecond); status.Code(err) != tc.want {
				t.Fatalf("Version of a broken runtime: %v, want %s", err, tc.want)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("the failing call took %s", took)
			}
			mend()
			if err := version(c, 2*time.Second); err != nil {
				t.Fatalf("Version once mended: %v", err)
			}
			if got := c.Dials(); got != tc.dials {
				t.Errorf("%d dials, want %d", got, tc.dials)
			}
		})
	}
}

func TestNoRuntime(t *testing.T) {
	c := New("unix://" + filepath.Join(t.TempDir(), "missing.sock"))
	start := time.Now()
	if err := version(c, 2*time.Second); status.Code(err) != codes.Unavailable {
		t.Errorf("Version with no socket: %v, want Unavailable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Version with no socket took %s, want it to fail at once", took)
	}
	c.Close()
	if err := version(c, 2*time.Second); status.Code(err) != codes.Canceled {
		t.Errorf("Version after Close: %v, want Canceled", err)
	}
}
