// Package criconn is the agent's one connection to the node's container
// runtime over CRI. The cri check's calls, its pod sandbox probe and the
// reporter's pod names (pkg/cripods) all go over it: the runtime sees one
// client, and the agent keeps one HTTP/2 connection and its goroutines,
// not one for each user.
package criconn

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxMsgSize is the largest answer taken, as the kubelet's CRI client
// takes: listing every container of a busy node, exited ones included,
// passes gRPC's default 4 MiB.
const maxMsgSize = 16 << 20

// Conn dials the runtime at its first call, not before, and is safe for
// concurrent use. A call that finds the runtime unavailable (its socket
// gone, the connection refused or broken) drops the connection, and the
// next call dials afresh: a runtime restarted is reached at the next call,
// not after gRPC's reconnect backoff, and while it is away nothing
// reconnects in the background. A hung runtime keeps the connection; its
// calls end at their callers' deadlines.
type Conn struct {
	endpoint, target string

	mu     sync.Mutex
	cc     *grpc.ClientConn
	closed bool
	dials  int
}

// errClosed answers calls made after Close: the agent is stopping.
var errClosed = status.Error(codes.Canceled, "the connection to the container runtime is closed")

// New returns a connection to the runtime at endpoint, unix:///path or a
// path.
func New(endpoint string) *Conn {
	target := endpoint
	if !strings.Contains(target, "://") {
		target = "unix://" + target
	}
	return &Conn{endpoint: endpoint, target: target}
}

// Endpoint is the endpoint as New was given it.
func (c *Conn) Endpoint() string { return c.endpoint }

// Runtime is CRI's runtime service over the connection.
func (c *Conn) Runtime() runtimeapi.RuntimeServiceClient {
	return runtimeapi.NewRuntimeServiceClient(c)
}

// Images is CRI's image service over the connection.
func (c *Conn) Images() runtimeapi.ImageServiceClient { return runtimeapi.NewImageServiceClient(c) }

// Dials says how often the connection has been dialled, for tests.
func (c *Conn) Dials() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// Invoke makes a unary call; with NewStream it makes Conn a
// grpc.ClientConnInterface, which the generated CRI clients are built on.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cc, err := c.get()
	if err != nil {
		return err
	}
	err = cc.Invoke(ctx, method, args, reply, opts...)
	if status.Code(err) == codes.Unavailable {
		c.drop(cc)
	}
	return err
}

// NewStream opens a stream; CRI's calls are unary, so nothing here uses
// one.
func (c *Conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc, err := c.get()
	if err != nil {
		return nil, err
	}
	s, err := cc.NewStream(ctx, desc, method, opts...)
	if status.Code(err) == codes.Unavailable {
		c.drop(cc)
	}
	return s, err
}

// get returns the connection, dialling it when there is none.
func (c *Conn) get() (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	if c.cc != nil {
		return c.cc, nil
	}
	// The backoff matters only to calls made while a dial is under way:
	// a failed one drops the connection (see Invoke). MinConnectTimeout
	// bounds a dial that hangs; the calls' own deadlines are shorter.
	params := grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: 5 * time.Second}
	params.Backoff.BaseDelay, params.Backoff.MaxDelay = 100*time.Millisecond, 3*time.Second
	cc, err := grpc.NewClient(c.target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A unix socket's path is no authority; the runtimes expect this.
		grpc.WithAuthority("localhost"),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize)),
		grpc.WithConnectParams(params))
	if err != nil {
		return nil, fmt.Errorf("connecting to the container runtime at %s: %w", c.endpoint, err)
	}
	c.cc = cc
	c.dials++
	return cc, nil
}

// drop closes cc if it is still the connection, so that the next call
// dials again. Calls under way on it end with it: they were failing too.
func (c *Conn) drop(cc *grpc.ClientConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc == cc {
		c.cc = nil
		cc.Close()
	}
}

// Close closes the connection for good; later calls fail at once.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cc == nil {
		return nil
	}
	err := c.cc.Close()
	c.cc = nil
	if err != nil {
		return fmt.Errorf("closing the connection to the container runtime: %w", err)
	}
	return nil
}
