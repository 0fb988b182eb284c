package integration

import (
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodeguard/nodeguard/internal/testdns"
)

// blackholeProxy forwards TCP to the API server, and can silently drop the
// connections it holds: it stops forwarding but keeps their sockets open,
// as a NAT or load balancer that forgot a flow does. New connections go
// through.
type blackholeProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	held   []chan struct{} // closed to stop a connection's forwarding
	conns  []net.Conn
}

func startBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *blackholeProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		stop := make(chan struct{})
		p.mu.Lock()
		p.held = append(p.held, stop)
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go pipe(in, out, stop)
		go pipe(out, in, stop)
	}
}

// pipe copies until stop is closed; then it reads and drops, so that the
// peer's writes never block and nothing ever arrives.
func pipe(dst, src net.Conn, stop chan struct{}) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-stop:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// blackhole silently drops every connection open now.
func (p *blackholeProxy) blackhole() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.held {
		close(s)
	}
	n := len(p.held)
	p.held = nil
	return n
}

// TestAgentRecoversFromASilentlyDroppedConnection: the agent must not have
// the kubelet's lease bug. Its HTTP/2 connection to the API server is
// silently dropped; client-go's HTTP/2 health check (a ping after
// ReadIdleTimeout, dropped after PingTimeout; shortened here through
// client-go's own environment variables) closes it, and the next write
// goes out on a new connection.
func TestAgentRecoversFromASilentlyDroppedConnection(t *testing.T) {
	c := needCluster(t)
	proxy := startBlackholeProxy(t, "127.0.0.1:"+strconv.Itoa(c.APIPort))
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range kc.Clusters {
		cl.Server = "https://" + proxy.ln.Addr().String()
	}
	kubeconfig := filepath.Join(t.TempDir(), "proxied.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	dns := testdns.Start(t)
	const name = "http2-node"
	createNode(t, name)
	config := freshStart + "  dns:\n    server: " + dns.Addr + "\n    period: 500ms\n    timeout: 200ms\n    failureThreshold: 1\n"
	// The agent inherits these; client-go reads them for its HTTP/2 health
	// check (defaults 30 s and 15 s).
	t.Setenv("HTTP2_READ_IDLE_TIMEOUT_SECONDS", "2")
	t.Setenv("HTTP2_PING_TIMEOUT_SECONDS", "2")
	startAgent(t, agentArgs(t, t.TempDir(), config, "--kubeconfig="+kubeconfig, "--node-name="+name, "--listen-address=off")...)
	waitCondition(t, name, "ClusterDNSUnreachable", corev1.ConditionFalse, 20*time.Second)
	time.Sleep(time.Second)

	dropped := proxy.blackhole()
	t.Logf("silently dropped %d connections", dropped)
	dns.Set(testdns.Hang)
	node, took := waitCondition(t, name, "ClusterDNSUnreachable", corev1.ConditionTrue, 15*time.Second)
	t.Logf("the agent's write reached the API server %s after its connection was dropped: %s", took, condition(node, "ClusterDNSUnreachable").Message)
}
