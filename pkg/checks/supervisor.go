package checks

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Supervisor runs checks side by side. A check that errors, returns early or
// panics is logged, counted and restarted with exponential backoff; the others
// never notice.
type Supervisor struct {
	Checks []Check
	// Emit receives every valid finding, stamped with its check's name and,
	// when the check left it zero, the time.
	Emit    func(finding.Finding)
	Log     *zap.Logger
	Metrics *SupervisorMetrics
	// InitialBackoff and MaxBackoff bound the wait before a restart; a run that
	// lasted longer than MaxBackoff resets the backoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Now            func() time.Time

	mu sync.Mutex
	// stuck holds, per check, since when a probe of it has been stuck.
	stuck map[string]time.Time
	// down holds, per check, since when it has not stayed running.
	down map[string]time.Time
}

// upAfter is how long a run must last to count as the check being up again.
const upAfter = time.Minute

// Conditions lists the supervisor's own condition type.
func (s *Supervisor) Conditions() []finding.ConditionDefault {
	return []finding.ConditionDefault{finding.CheckStuck}
}

// stuckKey carries, in a check's context, how RunPeriodic tells the
// supervisor about a stuck probe.
type stuckKey struct{}

// reportStuck tells the supervisor, if the context came from one, that a
// probe is stuck (since is non-zero) or no longer is.
func reportStuck(ctx context.Context, since time.Time) {
	if f, ok := ctx.Value(stuckKey{}).(func(time.Time)); ok {
		f(since)
	}
}

func (s *Supervisor) setStuck(name string, since time.Time) {
	s.mu.Lock()
	_, was := s.stuck[name]
	if since.IsZero() {
		delete(s.stuck, name)
	} else {
		s.stuck[name] = since
	}
	changed := was != !since.IsZero()
	var names []string
	for n, t := range s.stuck {
		names = append(names, fmt.Sprintf("%s (since %s)", n, t.UTC().Format(time.RFC3339)))
	}
	s.mu.Unlock()
	if !changed {
		return
	}
	v := 0.0
	if !since.IsZero() {
		v = 1
	}
	s.Metrics.stuck.WithLabelValues(name).Set(v)
	sort.Strings(names)
	f := finding.CheckStuck.Healthy()
	if len(names) > 0 {
		f = finding.Condition(finding.CheckStuck.Type, finding.StatusTrue, "CheckStuck", "probes stuck past their deadlines, abandoned: "+strings.Join(names, ", "))
	}
	f.Check, f.Time = "supervisor", s.Now()
	s.Emit(f)
}

func (s *Supervisor) setDown(name string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !down {
		delete(s.down, name)
	} else if _, ok := s.down[name]; !ok {
		s.down[name] = s.Now()
	}
}

// Down lists the checks that have not stayed running for longer than
// after: failing at start, or failing again after each restart.
func (s *Supervisor) Down(after time.Duration) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, since := range s.down {
		if s.Now().Sub(since) > after {
			out = append(out, fmt.Sprintf("%s (not running since %s)", name, since.UTC().Format(time.RFC3339)))
		}
	}
	sort.Strings(out)
	return out
}

// DownPastBackoff lists the checks that have not stayed running for longer
// than the longest wait between two restarts: restarted more than once, and
// failing still. A source that cannot be read (the kernel log, the journal)
// ends its check's run, so it shows here too.
func (s *Supervisor) DownPastBackoff() []string {
	// Run sets MaxBackoff before it starts any check, the caller's too.
	return s.Down(s.MaxBackoff)
}

// SupervisorMetrics are the per-check health metrics.
type SupervisorMetrics struct {
	stuck    *prometheus.GaugeVec
	running  *prometheus.GaugeVec
	starts   *prometheus.CounterVec
	failures *prometheus.CounterVec
	findings *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewSupervisorMetrics registers the per-check metrics on reg.
func NewSupervisorMetrics(reg prometheus.Registerer) *SupervisorMetrics {
	m := &SupervisorMetrics{
		stuck: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodeguard_check_stuck",
			Help: "1 while a probe of the check is stuck past its deadline.",
		}, []string{"check"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodeguard_check_running",
			Help: "1 while the check's Run is executing, 0 while it waits to be restarted.",
		}, []string{"check"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_check_runs_total",
			Help: "Times the check's Run was started, the first start included.",
		}, []string{"check"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_check_errors_total",
			Help: "Times the check's Run ended before shutdown, by how: error, panic or exit (returned nil early).",
		}, []string{"check", "how"}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_check_findings_total",
			Help: "Findings the check emitted, by kind; invalid ones are counted under kind=invalid and dropped.",
		}, []string{"check", "kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nodeguard_check_run_duration_seconds",
			Help:    "How long each of the check's runs lasted before it ended.",
			Buckets: prometheus.ExponentialBuckets(0.001, 10, 8),
		}, []string{"check"}),
	}
	reg.MustRegister(m.stuck, m.running, m.starts, m.failures, m.findings, m.duration)
	return m
}

// Run starts every check and returns when ctx ends and every check's Run has
// returned, or stopTimeout after ctx ends, whichever comes first. It returns
// the names of checks that had not returned by then.
func (s *Supervisor) Run(ctx context.Context, stopTimeout time.Duration) []string {
	if s.Metrics == nil {
		s.Metrics = NewSupervisorMetrics(prometheus.NewRegistry())
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.InitialBackoff <= 0 {
		s.InitialBackoff = time.Second
	}
	if s.MaxBackoff < s.InitialBackoff {
		s.MaxBackoff = 2 * time.Minute
	}
	s.mu.Lock()
	s.stuck, s.down = map[string]time.Time{}, map[string]time.Time{}
	s.mu.Unlock()
	// Nothing is stuck yet: say so, as a log check says its healthy
	// default, so that a reader (nodeguard check, the Node) sees False
	// rather than a type nobody reported on. With no check, there is
	// nothing to say.
	if len(s.Checks) > 0 {
		start := finding.CheckStuck.Healthy()
		start.Check, start.Time = "supervisor", s.Now()
		s.Emit(start)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		pending = map[string]bool{}
	)
	for _, c := range s.Checks {
		name := c.Name()
		s.Metrics.running.WithLabelValues(name).Set(0)
		s.Metrics.stuck.WithLabelValues(name).Set(0)
		for _, how := range []string{"error", "panic", "exit"} {
			s.Metrics.failures.WithLabelValues(name, how)
		}
		// Under mu: a check started earlier in this loop may already have
		// ended and be deleting its own entry.
		mu.Lock()
		pending[name] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.supervise(ctx, c)
			mu.Lock()
			delete(pending, name)
			mu.Unlock()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	<-ctx.Done()
	select {
	case <-done:
	case <-time.After(stopTimeout):
	}
	mu.Lock()
	defer mu.Unlock()
	var stuck []string
	for name := range pending {
		stuck = append(stuck, name)
	}
	return stuck
}

func (s *Supervisor) supervise(ctx context.Context, c Check) {
	name := c.Name()
	ctx = context.WithValue(ctx, stuckKey{}, func(since time.Time) { s.setStuck(name, since) })
	log := s.Log.With(zap.String("check", name))
	backoff := s.InitialBackoff
	for {
		started := s.Now()
		s.Metrics.starts.WithLabelValues(name).Inc()
		s.Metrics.running.WithLabelValues(name).Set(1)
		up := time.AfterFunc(upAfter, func() { s.setDown(name, false) })
		how, err := s.runOnce(ctx, c)
		up.Stop()
		s.Metrics.running.WithLabelValues(name).Set(0)
		lasted := s.Now().Sub(started)
		s.Metrics.duration.WithLabelValues(name).Observe(lasted.Seconds())
		if ctx.Err() != nil {
			return
		}
		s.Metrics.failures.WithLabelValues(name, how).Inc()
		s.setDown(name, true)
		if lasted > s.MaxBackoff {
			backoff = s.InitialBackoff
		}
		log.Error("check stopped; restarting after backoff",
			zap.String("how", how), zap.Error(err), zap.Duration("lasted", lasted), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.MaxBackoff)
	}
}

// runOnce runs the check once, turning a panic into an error so that the
// supervisor can restart it.
func (s *Supervisor) runOnce(ctx context.Context, c Check) (how string, err error) {
	name := c.Name()
	defer func() {
		if r := recover(); r != nil {
			how, err = "panic", fmt.Errorf("check %s panicked: %v\n%s", name, r, debug.Stack())
		}
	}()
	emit := func(f finding.Finding) {
		f.Check = name
		if f.Time.IsZero() {
			f.Time = s.Now()
		}
		if verr := f.Validate(); verr != nil {
			s.Metrics.findings.WithLabelValues(name, "invalid").Inc()
			s.Log.Error("check emitted an invalid finding; dropped", zap.String("check", name), zap.Error(verr))
			return
		}
		s.Metrics.findings.WithLabelValues(name, string(f.Kind)).Inc()
		s.Emit(f)
	}
	if err := c.Run(ctx, emit); err != nil {
		return "error", fmt.Errorf("check %s: %w", name, err)
	}
	return "exit", fmt.Errorf("check %s returned before shutdown", name)
}
