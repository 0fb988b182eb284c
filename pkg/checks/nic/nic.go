// Package nic watches the node's physical network interfaces: link state,
// carrier flaps and error rates, from sysfs and /proc/net.
package nic

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Name is the check's name in configuration and metrics.
const Name = "nic"

// Config is the check's section of the config file.
type Config struct {
	// Interfaces to watch; empty watches the interfaces that hold a default
	// route.
	Interfaces []string `json:"interfaces,omitempty"`
	// Period is how often the interfaces are looked at.
	Period finding.Duration `json:"period,omitempty"`
	// FlapThreshold carrier changes within FlapWindow make the link flapping.
	FlapThreshold int              `json:"flapThreshold,omitempty"`
	FlapWindow    finding.Duration `json:"flapWindow,omitempty"`
	// ErrorRate is the rx+tx errors per second above which an NICErrors
	// event is made; DropRate the same for dropped packets. 0 turns either off.
	ErrorRate float64 `json:"errorRate,omitempty"`
	DropRate  float64 `json:"dropRate,omitempty"`
}

// DefaultConfig: a flap is a carrier going down and up (2 changes); four
// changes in five minutes is a link that cannot stay up. Drops are off by
// default because busy nodes drop packets in normal operation.
func DefaultConfig() *Config {
	return &Config{
		Period:        finding.Duration{Duration: 10 * time.Second},
		FlapThreshold: 4,
		FlapWindow:    finding.Duration{Duration: 5 * time.Minute},
		ErrorRate:     10,
	}
}

// Validate checks the numbers.
func (c *Config) Validate() error {
	switch {
	case c.Period.Duration < 100*time.Millisecond:
		return &finding.FieldError{Field: "period", Value: c.Period, Reason: "must be at least 100ms"}
	case c.FlapThreshold < 1:
		return &finding.FieldError{Field: "flapThreshold", Value: c.FlapThreshold, Reason: "must be at least 1"}
	case c.FlapWindow.Duration < c.Period.Duration:
		return &finding.FieldError{Field: "flapWindow", Value: c.FlapWindow, Reason: "must be at least the period"}
	case c.ErrorRate < 0:
		return &finding.FieldError{Field: "errorRate", Value: c.ErrorRate, Reason: "must not be negative"}
	case c.DropRate < 0:
		return &finding.FieldError{Field: "dropRate", Value: c.DropRate, Reason: "must not be negative"}
	}
	return nil
}

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env)
})

// podPlumbing matches the virtual interfaces container networking makes;
// they are never the node's NIC.
var podPlumbing = regexp.MustCompile(`^(?:veth|cali|cni|flannel|docker|lxc|tunl|vxlan|cilium|kube-|br-|virbr|lo$)`)

// Check watches the interfaces.
type Check struct {
	cfg *Config
	log *zap.Logger
	// netClass is the host's /sys/class/net.
	netClass string
	proc     procfs.FS
	now      func() time.Time
}

// New builds the check.
func New(cfg *Config, env checks.Env) (*Check, error) {
	sysPath, procPath := env.Sys(), env.Proc()
	proc, err := procfs.NewFS(procPath)
	if err != nil {
		return nil, fmt.Errorf("opening procfs at %s: %w", procPath, err)
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	return &Check{cfg: cfg, log: env.Log, netClass: filepath.Join(sysPath, "class", "net"), proc: proc, now: env.Now}, nil
}

func (c *Check) Name() string { return Name }

func (c *Check) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{
		finding.NICDown,
		finding.NICFlapping,
	}
}

// Run probes every period until ctx ends.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	st := newState()
	return checks.RunLogged(ctx, c.log, "reading interface state", c.cfg.Period.Duration, c.cfg.Period.Duration,
		func(ctx context.Context) ([]finding.Finding, error) { return c.probe(st) },
		emit)
}

type sample struct {
	at             time.Time
	carrierChanges int64
	errors, drops  uint64
}

// state is what the probe remembers between runs. RunPeriodic never runs
// two probes at once, so it needs no lock.
type state struct {
	samples  map[string][]sample
	flapping map[string]bool
	lastWarn map[string]time.Time
	// uplinks are the interfaces that have held a default route since the
	// agent started. Taking an interface down (ip link set down, a driver
	// reset) makes the kernel delete the routes through it, and a DHCP
	// client may drop them when the carrier goes: an uplink must stay
	// watched after its route is gone, or its going down would hide it.
	uplinks map[string]bool
}

func newState() *state {
	return &state{samples: map[string][]sample{}, flapping: map[string]bool{}, lastWarn: map[string]time.Time{}, uplinks: map[string]bool{}}
}

// interfaces returns the configured interfaces, or those that hold a
// default route or have held one and still exist; gone names the uplinks
// forgotten now because they no longer exist.
func (c *Check) interfaces(st *state) (names, gone []string, err error) {
	if len(c.cfg.Interfaces) > 0 {
		return c.cfg.Interfaces, nil, nil
	}
	routes, err := c.proc.NetRoute()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("reading the routing table: %w", err)
	}
	routed := map[string]bool{}
	for _, r := range routes {
		if r.Destination == 0 && r.Mask == 0 && !podPlumbing.MatchString(r.Iface) {
			routed[r.Iface] = true
			st.uplinks[r.Iface] = true
		}
	}
	var out []string
	for name := range st.uplinks {
		if !routed[name] {
			// Gone from the routing table; forget it only once it is gone
			// from the host too (a device removed or renamed on purpose).
			if _, err := os.Stat(filepath.Join(c.netClass, name)); errors.Is(err, fs.ErrNotExist) {
				delete(st.uplinks, name)
				delete(st.samples, name)
				delete(st.flapping, name)
				delete(st.lastWarn, name)
				gone = append(gone, name)
				continue
			}
		}
		out = append(out, name)
	}
	sort.Strings(gone)
	if len(out) == 0 && len(gone) == 0 {
		return nil, nil, checks.ErrNoData
	}
	sort.Strings(out)
	return out, gone, nil
}

func (c *Check) probe(st *state) ([]finding.Finding, error) {
	ifaces, gone, err := c.interfaces(st)
	if err != nil {
		return nil, err
	}
	if len(ifaces) == 0 {
		// The last uplink watched is gone from the host (removed or
		// renamed) and nothing holds a default route: nothing is left to
		// be down. Said once; then there is no data, as on a node that
		// never had an uplink, and a NICDown it left must not stay.
		msg := "no interface left to watch: " + strings.Join(gone, ", ") + " no longer exists and no other holds a default route"
		return []finding.Finding{
			finding.Condition(finding.NICDown.Type, finding.StatusFalse, finding.NICDown.Reason, msg),
			finding.Condition(finding.NICFlapping.Type, finding.StatusFalse, finding.NICFlapping.Reason, msg),
		}, nil
	}
	now := c.now()
	netDev, err := c.proc.NetDev()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading /proc/net/dev: %w", err)
	}
	var (
		down, flapping []string
		out            []finding.Finding
	)
	for _, name := range ifaces {
		ifc, err := readLink(c.netClass, name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				down = append(down, name+" does not exist")
				continue
			}
			return nil, fmt.Errorf("reading interface %s: %w", name, err)
		}
		if why := linkDown(ifc); why != "" {
			down = append(down, name+" is down ("+why+")")
		}
		s := sample{at: now}
		if ifc.CarrierChanges != nil {
			s.carrierChanges = *ifc.CarrierChanges
		}
		if d, ok := netDev[name]; ok {
			s.errors = d.RxErrors + d.TxErrors
			s.drops = d.RxDropped + d.TxDropped
		}
		samples := append(st.samples[name], s)
		for len(samples) > 1 && now.Sub(samples[0].at) > c.cfg.FlapWindow.Duration {
			samples = samples[1:]
		}
		st.samples[name] = samples
		first := samples[0]
		if changes := s.carrierChanges - first.carrierChanges; changes >= int64(c.cfg.FlapThreshold) {
			// Stable while it lasts, so that a flapping link costs no status
			// write per period; the count is in the event and the log.
			msg := fmt.Sprintf("%s carrier changed at least %d times within %s", name, c.cfg.FlapThreshold, c.cfg.FlapWindow.Duration)
			if !st.flapping[name] {
				c.log.Info("link flapping", zap.String("interface", name), zap.Int64("carrier_changes", changes))
			}
			flapping = append(flapping, msg)
			if !st.flapping[name] {
				out = append(out, finding.Event(finding.SeverityWarning, "NICFlapping", msg))
			}
			st.flapping[name] = true
		} else {
			st.flapping[name] = false
		}
		if len(samples) > 1 {
			prev := samples[len(samples)-2]
			out = append(out, c.rates(st, name, prev, s)...)
		}
	}
	out = append(out, condition(finding.NICDown, "NICIsDown", finding.NICDown.Message+": "+strings.Join(ifaces, ", "), down))
	out = append(out, condition(finding.NICFlapping, "NICIsFlapping", finding.NICFlapping.Message, flapping))
	return out, nil
}

// rates makes an NICErrors event when errors or drops rise faster than
// allowed, at most once per flap window per interface.
func (c *Check) rates(st *state, name string, prev, cur sample) []finding.Finding {
	secs := cur.at.Sub(prev.at).Seconds()
	if secs <= 0 || cur.at.Sub(st.lastWarn[name]) < c.cfg.FlapWindow.Duration {
		return nil
	}
	var why []string
	if r := rate(prev.errors, cur.errors, secs); c.cfg.ErrorRate > 0 && r > c.cfg.ErrorRate {
		why = append(why, fmt.Sprintf("errors rising at %.1f/s", r))
	}
	if r := rate(prev.drops, cur.drops, secs); c.cfg.DropRate > 0 && r > c.cfg.DropRate {
		why = append(why, fmt.Sprintf("drops rising at %.1f/s", r))
	}
	if len(why) == 0 {
		return nil
	}
	st.lastWarn[name] = cur.at
	return []finding.Finding{finding.Event(finding.SeverityWarning, "NICErrors", name+": "+strings.Join(why, ", "))}
}

func rate(prev, cur uint64, secs float64) float64 {
	if cur < prev { // counters reset (driver reload)
		return 0
	}
	return float64(cur-prev) / secs
}

// linkDown says why an interface is not passing traffic, or "".
// link is what the check reads of an interface: three of the thirty-odd
// files of its sysfs directory. procfs's NetClassByIface reads them all,
// and on an idle agent that was most of the check's cost (each file an
// open, a read and a close, every probe, every interface).
type link struct {
	OperState      string
	Carrier        *int64 // nil where the kernel refuses to say (an interface down)
	CarrierChanges *int64 // nil where the driver does not count them
}

// readLink reads name's link state under netClass; an interface that does
// not exist gives an error that is fs.ErrNotExist.
func readLink(netClass, name string) (*link, error) {
	dir := filepath.Join(netClass, name)
	read := func(file string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		return strings.TrimSpace(string(b)), err
	}
	op, err := read("operstate")
	if err != nil {
		if _, statErr := os.Stat(dir); errors.Is(statErr, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading interface %s: %w", name, statErr)
		}
		op = "" // a driver without the file: judged by carrier alone
	}
	l := &link{OperState: op}
	// carrier and carrier_changes answer EINVAL while the interface is
	// administratively down: no value, as procfs gives none.
	if v, err := read("carrier"); err == nil {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			l.Carrier = &n
		}
	}
	if v, err := read("carrier_changes"); err == nil {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			l.CarrierChanges = &n
		}
	}
	return l, nil
}

func linkDown(ifc *link) string {
	var why []string
	// "unknown" is what drivers without operstate support report while up.
	if ifc.OperState != "" && ifc.OperState != "up" && ifc.OperState != "unknown" {
		why = append(why, "operstate "+ifc.OperState)
	}
	if ifc.Carrier != nil && *ifc.Carrier == 0 {
		why = append(why, "no carrier")
	}
	return strings.Join(why, ", ")
}

func condition(cond finding.ConditionDefault, badReason, goodMessage string, problems []string) finding.Finding {
	if len(problems) == 0 {
		return finding.Condition(cond.Type, finding.StatusFalse, cond.Reason, goodMessage)
	}
	return finding.Condition(cond.Type, finding.StatusTrue, badReason, strings.Join(problems, "; "))
}
