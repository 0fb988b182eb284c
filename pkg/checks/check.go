package checks

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/nodeguard/nodeguard/pkg/criconn"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
)

// Check is one source of findings. Run sends findings through emit until ctx
// ends, and then returns nil. A Run that returns early, with or without an
// error, or panics, is restarted by the Supervisor with backoff.
type Check interface {
	Name() string
	// Conditions lists the condition types this check owns, with their healthy
	// defaults. The reporter writes only these types.
	Conditions() []finding.ConditionDefault
	Run(ctx context.Context, emit func(finding.Finding)) error
}

// LogDriven is implemented by checks that report a condition only when a
// log line says so: their silence means the healthy default, where a
// probing check's silence means it has not looked yet.
type LogDriven interface {
	LogDriven()
}

// Env is what a check may know of the node and the agent around it.
type Env struct {
	Log *zap.Logger
	// NodeName is the Kubernetes node this agent reports on; empty when
	// standalone without a name.
	NodeName string
	// ProcPath and SysPath are the host's /proc and /sys as the agent sees them
	// (/host/proc in the DaemonSet).
	ProcPath string
	SysPath  string
	// StateDir holds small files a check keeps across agent restarts.
	StateDir string
	// Lease is the agent's view of this node's Lease; nil when standalone.
	Lease LeaseView
	// CRI is the agent's one connection to the container runtime, at the
	// cri check's endpoint, which the reporter's pod names use too; nil
	// makes a check that talks to the runtime dial its own.
	CRI *criconn.Conn
	// Metrics is where a check registers metrics of its own.
	Metrics prometheus.Registerer
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Recent keeps the latest lines of the node's logs, for the evidence
	// captured when a condition turns True: the log checks hand it every
	// line they read. Nil keeps none.
	Recent Recorder
	// RecentUnits are systemd units whose journal lines the journald
	// check reads for Recent alone (the runtime's), beside the units its
	// rules name.
	RecentUnits []string
}

// Log names the log a recorded line is from.
type Log int

const (
	KernelLog  Log = iota // the kernel's messages, from any of the kmsg check's sources
	ServiceLog            // systemd units' journal lines, the unit named in the text
)

// Recorder keeps recent log lines. Record must not block and must copy
// text if it keeps it: it is called for every line a log check reads.
type Recorder interface {
	Record(log Log, at time.Time, text string)
}

// Record hands a line to e.Recent, if there is one.
func (e Env) Record(log Log, at time.Time, text string) {
	if e.Recent != nil {
		e.Recent.Record(log, at, text)
	}
}

// Proc returns the host's /proc as the agent sees it.
func (e Env) Proc() string {
	if e.ProcPath == "" {
		return "/proc"
	}
	return e.ProcPath
}

// Sys returns the host's /sys as the agent sees it.
func (e Env) Sys() string {
	if e.SysPath == "" {
		return "/sys"
	}
	return e.SysPath
}

// LeaseView is a read-only view of this node's Lease in kube-node-lease,
// kept by an informer the wiring owns.
type LeaseView interface {
	// NodeLease returns the Lease as last seen and whether it exists, and
	// since when the view has been up to date (the agent reaching the API
	// server): zero while it is not.
	NodeLease() (lease *coordinationv1.Lease, exists bool, currentSince time.Time)
	// Reread reads the Lease from the API server now, so that what
	// NodeLease returns next is no older than the call. Its error wraps
	// kube.ErrServerNotReady when the server answers but says it is not
	// ready.
	Reread(ctx context.Context) error
}

// Validator is implemented by check configurations that have rules beyond
// their types. Validate returns a *FieldError for a bad field.
type Validator interface {
	Validate() error
}

// Registration says how to build one check from its configuration section.
type Registration struct {
	Name           string
	DefaultEnabled bool
	// NewConfig returns a pointer to the check's configuration holding its
	// defaults; the loader decodes the check's section over it.
	NewConfig func() any
	// ConfigType is the type NewConfig points to, for the loader's field checks.
	ConfigType reflect.Type
	New        func(cfg any, env Env) (Check, error)
}

// Define makes a Registration from a typed config and constructor, so that a
// check's package need not deal in `any`.
func Define[C any](name string, enabledByDefault bool, defaults func() *C, build func(cfg *C, env Env) (Check, error)) Registration {
	return Registration{
		Name:           name,
		DefaultEnabled: enabledByDefault,
		NewConfig:      func() any { return defaults() },
		ConfigType:     reflect.TypeFor[C](),
		New: func(cfg any, env Env) (Check, error) {
			c, ok := cfg.(*C)
			if !ok {
				return nil, fmt.Errorf("check %s: config is %T, want *%v", name, cfg, reflect.TypeFor[C]())
			}
			return build(c, env)
		},
	}
}

// Registry is the set of checks this binary knows, in a fixed order.
type Registry []Registration

// Lookup returns the registration with the given name.
func (r Registry) Lookup(name string) (Registration, bool) {
	for _, reg := range r {
		if reg.Name == name {
			return reg, true
		}
	}
	return Registration{}, false
}

// Names lists the registered checks' names.
func (r Registry) Names() []string {
	names := make([]string, len(r))
	for i, reg := range r {
		names[i] = reg.Name
	}
	return names
}
