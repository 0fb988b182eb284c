// Package testdns runs a real DNS server on loopback for tests, built on
// github.com/miekg/dns, that answers, hangs or says NXDOMAIN as told.
package testdns

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Mode is how the server treats queries.
type Mode string

const (
	Answer   Mode = "answer"   // an A record for every name
	Hang     Mode = "hang"     // no reply at all
	NXDomain Mode = "nxdomain" // the name does not exist
)

// Server is a running test DNS server.
type Server struct {
	Addr string // host:port on loopback
	mode atomic.Value
	srv  *dns.Server
}

// Start starts a server that answers; it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Listen starts a server that answers on addr (a loopback host:port) until
// Close: the node e2e harness's stand-in for the cluster DNS, which must be
// on port 53.
func Listen(addr string) (*Server, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("test DNS server: %w", err)
	}
	s := &Server{Addr: pc.LocalAddr().String()}
	s.Set(Answer)
	s.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve)}
	go s.srv.ActivateAndServe()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Shutdown() }

// Set changes how later queries are treated.
func (s *Server) Set(m Mode) { s.mode.Store(m) }

func (s *Server) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	switch s.mode.Load().(Mode) {
	case Hang:
		return
	case NXDomain:
		m.Rcode = dns.RcodeNameError
	default:
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(10, 96, 0, 1)})
		}
	}
	w.WriteMsg(m)
}
