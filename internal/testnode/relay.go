package testnode

import (
	"fmt"
	"net"
	"sync"
)

// Relay forwards TCP connections to a target, and on Blackhole stops
// forwarding without closing anything: the peers' connections stay open
// and nothing comes back, as through a dead NAT entry or a half-broken
// load balancer (the stuck HTTP/2 connection of kubernetes/kubernetes#87615).
// New connections are accepted and held the same way. Heal forwards again,
// what was held included.
type Relay struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	held   bool
	healed *sync.Cond
	conns  map[net.Conn]struct{}
	closed bool
	done   sync.WaitGroup
}

// NewRelay listens on listen (host:port, port 0 for any) and forwards to
// target.
func NewRelay(listen, target string) (*Relay, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("relay to %s: %w", target, err)
	}
	r := &Relay{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	r.healed = sync.NewCond(&r.mu)
	r.done.Add(1)
	go r.accept()
	return r, nil
}

// Addr is where the relay listens.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Blackhole stops forwarding, in both directions, on every connection.
func (r *Relay) Blackhole() {
	r.mu.Lock()
	r.held = true
	r.mu.Unlock()
}

// Heal forwards again.
func (r *Relay) Heal() {
	r.mu.Lock()
	r.held = false
	r.healed.Broadcast()
	r.mu.Unlock()
}

// Close stops listening, closes every connection and waits for the
// forwarding to end.
func (r *Relay) Close() {
	r.mu.Lock()
	r.closed, r.held = true, false
	for c := range r.conns {
		c.Close()
	}
	r.healed.Broadcast()
	r.mu.Unlock()
	r.ln.Close()
	r.done.Wait()
}

func (r *Relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *Relay) accept() {
	defer r.done.Done()
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		if !r.track(in) {
			continue
		}
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			defer r.untrack(in)
			out, err := net.Dial("tcp", r.target)
			if err != nil {
				return
			}
			if !r.track(out) {
				return
			}
			defer r.untrack(out)
			var both sync.WaitGroup
			both.Add(2)
			go func() { defer both.Done(); r.pipe(out, in); out.Close() }()
			go func() { defer both.Done(); r.pipe(in, out); in.Close() }()
			both.Wait()
		}()
	}
}

// pipe copies from src to dst until either ends, waiting before each
// write while the relay holds.
func (r *Relay) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			for r.held && !r.closed {
				r.healed.Wait()
			}
			closed := r.closed
			r.mu.Unlock()
			if closed {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
