package nic

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// fakeHost builds sysfs and procfs trees for a host's interfaces.
type fakeHost struct {
	t         *testing.T
	sys, proc string
}

func newFakeHost(t *testing.T) *fakeHost {
	h := &fakeHost{t: t, sys: t.TempDir(), proc: t.TempDir()}
	os.MkdirAll(filepath.Join(h.proc, "net"), 0o755)
	h.write(filepath.Join(h.proc, "net/route"), "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n")
	h.write(filepath.Join(h.proc, "net/dev"), "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n")
	return h
}

func (h *fakeHost) write(path, content string) {
	h.t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *fakeHost) iface(name, operstate, carrier, changes string) {
	dir := filepath.Join(h.sys, "class/net", name)
	os.MkdirAll(dir, 0o755)
	h.write(filepath.Join(dir, "operstate"), operstate+"\n")
	h.write(filepath.Join(dir, "carrier"), carrier+"\n")
	h.write(filepath.Join(dir, "carrier_changes"), changes+"\n")
}

func (h *fakeHost) route(iface, dest, mask string) {
	f, _ := os.OpenFile(filepath.Join(h.proc, "net/route"), os.O_APPEND|os.O_WRONLY, 0)
	defer f.Close()
	f.WriteString(iface + "\t" + dest + "\t0101A8C0\t0003\t0\t0\t100\t" + mask + "\t0\t0\t0\n")
}

func (h *fakeHost) dev(iface string, rxErrs, txErrs string) {
	f, _ := os.OpenFile(filepath.Join(h.proc, "net/dev"), os.O_APPEND|os.O_WRONLY, 0)
	defer f.Close()
	f.WriteString("  " + iface + ": 1000 10 " + rxErrs + " 0 0 0 0 0 2000 20 " + txErrs + " 0 0 0 0 0\n")
}

func (h *fakeHost) check(cfg *Config, now *time.Time) *Check {
	h.t.Helper()
	c, err := New(cfg, checks.Env{Log: zaptest.NewLogger(h.t), SysPath: h.sys, ProcPath: h.proc, Now: func() time.Time { return *now }})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func byType(fs []finding.Finding) map[string]finding.Finding {
	out := map[string]finding.Finding{}
	for _, f := range fs {
		key := f.Type
		if f.Kind == finding.KindEvent {
			key = "event:" + f.Reason
		}
		out[key] = f
	}
	return out
}

func TestNICDownFromOperstateCarrierAndMissingInterfaces(t *testing.T) {
	tests := []struct {
		name               string
		operstate, carrier string
		configured         []string
		wantStatus         finding.Status
		wantMessage        string
	}{
		{"up", "up", "1", nil, finding.StatusFalse, "eth0"},
		{"no carrier", "up", "0", nil, finding.StatusTrue, "eth0 is down (no carrier)"},
		{"peer down", "lowerlayerdown", "0", nil, finding.StatusTrue, "operstate lowerlayerdown, no carrier"},
		{"admin down", "down", "", nil, finding.StatusTrue, "operstate down"},
		{"unknown but carrying", "unknown", "1", nil, finding.StatusFalse, "eth0"},
		{"configured but missing", "up", "1", []string{"eth0", "ens5"}, finding.StatusTrue, "ens5 does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t)
			h.iface("eth0", tt.operstate, tt.carrier, "2")
			h.iface("veth1234", "down", "0", "9") // pod plumbing, never watched
			h.route("eth0", "00000000", "00000000")
			h.route("veth1234", "00000000", "00000000")
			h.route("eth0", "0001A8C0", "00FFFFFF")
			cfg := DefaultConfig()
			cfg.Interfaces = tt.configured
			now := time.Unix(1000, 0)
			got, err := h.check(cfg, &now).probe(newState())
			if err != nil {
				t.Fatal(err)
			}
			down := byType(got)[finding.NICDown.Type]
			if down.Status != tt.wantStatus || !strings.Contains(down.Message, tt.wantMessage) {
				t.Errorf("NICDown = %s %q, want %s holding %q", down.Status, down.Message, tt.wantStatus, tt.wantMessage)
			}
			if strings.Contains(down.Message, "veth") {
				t.Errorf("pod plumbing watched: %q", down.Message)
			}
		})
	}
}

// TestUplinkStaysWatchedAfterItsRouteGoes: taking an interface down makes
// the kernel delete the routes through it, so the uplink found by its
// default route must stay watched once that route is gone, until the
// interface itself is.
func TestUplinkStaysWatchedAfterItsRouteGoes(t *testing.T) {
	h := newFakeHost(t)
	routeHeader := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	h.iface("eth0", "up", "1", "2")
	h.route("eth0", "00000000", "00000000")
	now := time.Unix(1000, 0)
	c := h.check(DefaultConfig(), &now)
	st := newState()
	got, err := c.probe(st)
	if err != nil {
		t.Fatal(err)
	}
	if down := byType(got)[finding.NICDown.Type]; down.Status != finding.StatusFalse {
		t.Fatalf("NICDown = %s %q with eth0 up, want False", down.Status, down.Message)
	}

	// ip link set eth0 down: operstate down, and no route left.
	h.iface("eth0", "down", "", "3")
	h.write(filepath.Join(h.proc, "net/route"), routeHeader)
	now = now.Add(10 * time.Second)
	got, err = c.probe(st)
	if err != nil {
		t.Fatalf("probe after the uplink went down and lost its route: %v, want NICDown", err)
	}
	if down := byType(got)[finding.NICDown.Type]; down.Status != finding.StatusTrue || !strings.Contains(down.Message, "eth0 is down (operstate down") {
		t.Errorf("NICDown = %s %q after eth0 went down and its route went, want True naming eth0", down.Status, down.Message)
	}

	// The interface removed from the host: no longer an uplink to watch.
	// The NICDown it left is cleared once, then there is no data.
	if err := os.RemoveAll(filepath.Join(h.sys, "class/net/eth0")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	got, err = c.probe(st)
	if err != nil {
		t.Fatalf("probe after eth0 was removed: %v, want NICDown cleared", err)
	}
	if down := byType(got)[finding.NICDown.Type]; down.Status != finding.StatusFalse || !strings.Contains(down.Message, "eth0 no longer exists") {
		t.Errorf("NICDown = %s %q after eth0 was removed, want False saying it is gone", down.Status, down.Message)
	}
	now = now.Add(10 * time.Second)
	if _, err := c.probe(st); err != checks.ErrNoData {
		t.Errorf("probe after that = %v, want ErrNoData", err)
	}
}

func TestNoDefaultRouteIsNoData(t *testing.T) {
	h := newFakeHost(t)
	now := time.Unix(1000, 0)
	if _, err := h.check(DefaultConfig(), &now).probe(newState()); err != checks.ErrNoData {
		t.Errorf("probe with no default route = %v, want ErrNoData", err)
	}
}

func TestFlappingAndErrorRates(t *testing.T) {
	h := newFakeHost(t)
	h.route("eth0", "00000000", "00000000")
	h.iface("eth0", "up", "1", "10")
	h.dev("eth0", "0", "0")
	now := time.Unix(1000, 0)
	c := h.check(DefaultConfig(), &now)
	st := newState()
	step := func(changes, rxErrs string) map[string]finding.Finding {
		t.Helper()
		h.iface("eth0", "up", "1", changes)
		h.write(filepath.Join(h.proc, "net/dev"), "h1\nh2\n")
		h.dev("eth0", rxErrs, "0")
		now = now.Add(10 * time.Second)
		got, err := c.probe(st)
		if err != nil {
			t.Fatal(err)
		}
		return byType(got)
	}
	step("10", "0")
	if got := step("12", "0"); got[finding.NICFlapping.Type].Status != finding.StatusFalse {
		t.Errorf("2 changes: NICFlapping %s, want False", got[finding.NICFlapping.Type].Status)
	}
	got := step("14", "150") // 4 changes within the window; 150 errors in 10 s
	if got[finding.NICFlapping.Type].Status != finding.StatusTrue || got["event:NICFlapping"].Reason == "" {
		t.Errorf("4 changes: %+v, want NICFlapping True and an event", got)
	}
	if e := got["event:NICErrors"]; !strings.Contains(e.Message, "errors rising at 15.0/s") {
		t.Errorf("NICErrors event %+v, want errors rising at 15.0/s", e)
	}
	got = step("14", "300")
	if _, again := got["event:NICFlapping"]; again {
		t.Error("NICFlapping event repeated while still flapping")
	}
	if _, again := got["event:NICErrors"]; again {
		t.Error("NICErrors event repeated within the window")
	}
	// Quiet for longer than the window: stable again.
	for range 31 {
		got = step("14", "300")
	}
	if got[finding.NICFlapping.Type].Status != finding.StatusFalse {
		t.Errorf("after a quiet window NICFlapping %s, want False", got[finding.NICFlapping.Type].Status)
	}
}
