package dns

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/internal/testdns"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestResolveAgainstARealServer(t *testing.T) {
	d := testdns.Start(t)
	cfg := DefaultConfig()
	cfg.Server = d.Addr
	cfg.Timeout = finding.Duration{Duration: 300 * time.Millisecond}
	c := &Check{cfg: cfg, log: zaptest.NewLogger(t)}
	for _, tt := range []struct {
		mode testdns.Mode
		want string
	}{
		{testdns.Answer, ""},
		{testdns.Hang, "did not answer"},
		{testdns.NXDomain, "does not exist"},
	} {
		d.Set(tt.mode)
		got := c.resolve(context.Background(), d.Addr)
		if (tt.want == "" && got != "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: resolve = %q, want %q", tt.mode, got, tt.want)
		}
	}
}

func TestServerFromKubeletConfig(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "config.yaml")
	os.WriteFile(kc, []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\n"), 0o644)
	cfg := DefaultConfig()
	cfg.KubeletConfig = kc
	if got, err := (&Check{cfg: cfg}).server(); err != nil || got != "10.96.0.10:53" {
		t.Errorf("server() = %q, %v; want 10.96.0.10:53 from the kubelet config", got, err)
	}
	cfg.KubeletConfig = filepath.Join(dir, "missing.yaml")
	if _, err := (&Check{cfg: cfg}).server(); err != checks.ErrNoData {
		t.Errorf("without a kubelet config: %v, want ErrNoData", err)
	}
}

// TestRefusedQueryGivesTheSameMessageEachTime: nothing listens on the
// server's port. The message names the server asked and the cause, and is
// the same from one probe to the next: a message that changed (Go's error
// carries each query's local port) would cost a status write per probe.
func TestRefusedQueryGivesTheSameMessageEachTime(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := pc.LocalAddr().String()
	pc.Close() // now nothing listens there: the kernel answers port unreachable
	cfg := DefaultConfig()
	cfg.Timeout = finding.Duration{Duration: 300 * time.Millisecond}
	c := &Check{cfg: cfg, log: zaptest.NewLogger(t)}
	first := c.resolve(context.Background(), server)
	second := c.resolve(context.Background(), server)
	if !strings.Contains(first, "through "+server+" failed: connection refused") {
		t.Errorf("resolve = %q, want it to name %s and connection refused", first, server)
	}
	if first != second {
		t.Errorf("two probes of the same failure gave %q and %q", first, second)
	}
}
