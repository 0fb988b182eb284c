package reporter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// NodeSinkOptions tune the API server sink.
type NodeSinkOptions struct {
	NodeName string
	// MinWriteInterval is the least time between two status writes: a burst
	// of changes becomes one write.
	MinWriteInterval time.Duration
	// Heartbeat rewrites the conditions, unchanged but for
	// lastHeartbeatTime, so that readers can tell a live agent from a dead one.
	Heartbeat time.Duration
	// RequestTimeout bounds each API request.
	RequestTimeout time.Duration
	// MaxRetryInterval caps the backoff between writes that failed for want
	// of an API server (10 s by default, the kubelet's own status period):
	// with every node retrying through an outage, a 1 s cap would be 5,000
	// requests a second at a recovering server. A sign that the server is
	// back (the Lease watch getting through) ends the wait at once.
	MaxRetryInterval time.Duration
	// EventQPS and EventBurst rate-limit the writes of events about the
	// Node per event type, as client-go's spam filter keys them. Events
	// over the limit wait in the spool for their turn.
	EventQPS   float32
	EventBurst int
	// Reasons are the user's settings per event reason (config's
	// reporter.reasons): on or off, minimum occurrences, hourly budget.
	Reasons map[string]finding.EventPolicy
	// SpoolDir keeps the events not yet written across agent restarts;
	// empty keeps them in memory only.
	SpoolDir string
	// SpoolSize is the most events the spool holds; more are counted and
	// summarised in one EventsSuppressed event.
	SpoolSize int
	// SummaryInterval is the least time between two EventsSuppressed
	// summaries; the counts add up in the pending one meanwhile.
	SummaryInterval time.Duration
	// Aggregates are the aggregate condition types the reporter publishes
	// (Reporter.Aggregates). The Node's read at start refuses them when
	// another writer owns one there (ForeignWriter).
	Aggregates []finding.Aggregate
	// Pods, when set, names the pod and container of an event finding that
	// carries a pod UID.
	Pods PodLookup
}

// NodeSink writes the owned conditions to the Node's status and events about
// the Node. It never loses the newest state: a failed write is retried with
// backoff, and each write sends the reporter's state as it is at the time.
type NodeSink struct {
	opts    NodeSinkOptions
	log     *zap.Logger
	node    *nodeClient
	events  *nodeEvents
	metrics *nodeSinkMetrics

	mu sync.Mutex
	// state is the reporter's, from Start on; nil before.
	state State
	// generation counts changes to the state, so that a write knows whether
	// something changed while it was in flight.
	generation uint64
	written    uint64
	wake       chan struct{}
}

type nodeSinkMetrics struct {
	writes *prometheus.CounterVec
	synced prometheus.Gauge
	last   prometheus.Gauge
}

// NewNodeSink returns a sink for the node named in opts. Call Run to start
// writing. The settings a user configures (the write interval, the
// heartbeat and the event limits) have their defaults in one place,
// pkg/config, and must be set; the internal ones default here.
func NewNodeSink(client kube.Client, log *zap.Logger, reg prometheus.Registerer, opts NodeSinkOptions) (*NodeSink, error) {
	if opts.MinWriteInterval <= 0 || opts.Heartbeat <= 0 || opts.EventQPS <= 0 || opts.EventBurst <= 0 || opts.SpoolSize <= 0 {
		return nil, fmt.Errorf("node sink for %s: minWriteInterval %s, heartbeat %s, eventQPS %g, eventBurst %d and eventSpoolSize %d must all be above zero",
			opts.NodeName, opts.MinWriteInterval, opts.Heartbeat, opts.EventQPS, opts.EventBurst, opts.SpoolSize)
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.MaxRetryInterval <= 0 {
		opts.MaxRetryInterval = 10 * time.Second
	}
	if opts.SummaryInterval <= 0 {
		opts.SummaryInterval = 5 * time.Minute
	}
	m := &nodeSinkMetrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_node_status_writes_total",
			Help: "Patches of the Node's status, by result (success or error).",
		}, []string{"result"}),
		synced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodeguard_node_status_synced",
			Help: "1 when the Node's conditions in the API server match the agent's latest state, 0 while a write is pending.",
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodeguard_node_status_last_write_timestamp_seconds",
			Help: "Unix time of the last successful status write.",
		}),
	}
	reg.MustRegister(m.writes, m.synced, m.last)
	events := newNodeEvents(client, log, reg, opts)
	node := &nodeClient{client: client, name: opts.NodeName, log: log, requestTimeout: opts.RequestTimeout,
		maxRetry: opts.MaxRetryInterval, exclusive: opts.Aggregates, recovered: make(chan struct{}, 1)}
	node.reach = newReachability(log, reg, events.record)
	node.reach.onRecover = func() {
		node.signalRecovered()
		events.signalRecovered()
	}
	events.reach = node.reach
	return &NodeSink{opts: opts, log: log, node: node, events: events, metrics: m, wake: make(chan struct{}, 1)}, nil
}

// ReadConditions reads the Node's conditions for the reporter to start
// from (Reporter.Start), retrying until it succeeds or ctx ends. It is the
// agent's only read of the Node's conditions. It fails at once, with a
// *ForeignWriterError, when another writer owns an aggregate type of
// opts.Aggregates there: the reporter must not start.
func (s *NodeSink) ReadConditions(ctx context.Context) ([]Condition, error) {
	return s.node.readConditions(ctx)
}

// ObserveAPI takes the result of one of the agent's requests to the API
// server, for its view of whether the server is reachable. The sink's own
// requests are observed already; other users (the Lease watch) call this.
func (s *NodeSink) ObserveAPI(err error) { s.node.reach.observe(err) }

// APIReachable says whether the agent's requests reach the API server, and
// since when they have after an outage (zero when there has been none).
func (s *NodeSink) APIReachable() (up bool, since time.Time) { return s.node.reach.state() }

// Start takes the reporter's state; the first write carries all of it.
func (s *NodeSink) Start(state State) {
	s.mu.Lock()
	s.state = state
	s.mu.Unlock()
	s.changed()
}

// EventDropped is when an event last found the event spool full (zero if
// never), for the agent's own health.
func (s *NodeSink) EventDropped() time.Time { return s.events.lastDropped() }

// TakesEventsBeforeStart marks the sink as an EarlyEventSink: an event
// needs none of the state Start brings.
func (s *NodeSink) TakesEventsBeforeStart() {}

// Event spools an event about the Node for the API server.
func (s *NodeSink) Event(f finding.Finding) { s.events.finding(f) }

// Changed marks the conditions for a write.
func (s *NodeSink) Changed(Condition) { s.changed() }

func (s *NodeSink) changed() {
	s.mu.Lock()
	s.generation++
	// Under the lock, as a write sets it back to 1: set after it, a 0
	// could outlast a write that already took this generation.
	s.metrics.synced.Set(0)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// finalWriteTimeout bounds the write of what is pending when the sink
// stops, inside the agent's shutdown grace.
const finalWriteTimeout = 1500 * time.Millisecond

// Run writes the node status and delivers the events until ctx ends, then
// writes once more what status is still pending, and leaves the events not
// yet delivered in the spool for the next agent. Nothing is written before the
// reporter has started, so that no write can overwrite conditions it has
// not read from the Node yet. Cancel ctx only once nothing will report any
// more (the checks have stopped), so that the last findings go out.
func (s *NodeSink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { s.events.run(ctx) })
	defer wg.Wait()
	defer s.flush()

	var (
		lastWrite time.Time
		owed      bool // the last write failed
		retry     = initialRetry
	)
	heartbeat := time.NewTimer(heartbeatJitter(s.opts.Heartbeat))
	defer heartbeat.Stop()
	for {
		s.mu.Lock()
		pending := owed || s.generation != s.written
		s.mu.Unlock()
		if !pending {
			select {
			case <-ctx.Done():
				return nil
			case <-s.wake:
				// The signal may be stale (its change already went out
				// with the last write): look again before writing.
				continue
			case <-heartbeat.C:
			}
		}
		// Coalesce: whatever arrives within MinWriteInterval of the last write
		// goes out in the next one.
		if wait := time.Until(lastWrite.Add(s.opts.MinWriteInterval)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		sent := time.Now()
		wrote, err := s.write(ctx)
		lastWrite = time.Now()
		if ctx.Err() == nil && wrote {
			s.node.reach.observeSent(sent, err)
		}
		if err != nil {
			owed = true
			s.metrics.writes.WithLabelValues("error").Inc()
			s.log.Warn("writing node conditions failed; will retry", zap.Error(err), zap.Duration("retry", retry))
			var ok bool
			if retry, ok = s.node.waitToRetry(ctx, err, retry); !ok {
				return nil
			}
			continue
		}
		owed = false
		retry = initialRetry
		if wrote {
			s.node.drainRecovered()
			s.metrics.writes.WithLabelValues("success").Inc()
			s.metrics.last.Set(float64(lastWrite.Unix()))
		}
		if !heartbeat.Stop() {
			select {
			case <-heartbeat.C:
			default:
			}
		}
		heartbeat.Reset(heartbeatJitter(s.opts.Heartbeat))
	}
}

// heartbeatJitter draws each heartbeat period from the last quarter up to
// d, never past it, so that readers can still count on one write per d.
// Without it, every node's heartbeat lines up after anything that made
// them all write at once (a rollout, an outage's end, a cluster-wide
// fault) and stays lined up: a wave of one write per node every period,
// about 40 s of queued writes at 5,000 nodes (hack/bench).
func heartbeatJitter(d time.Duration) time.Duration {
	return d - rand.N(d/4+1)
}

// flush writes the conditions if any change has not gone out.
func (s *NodeSink) flush() {
	s.mu.Lock()
	pending := s.generation != s.written
	s.mu.Unlock()
	if !pending {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalWriteTimeout)
	defer cancel()
	wrote, err := s.write(ctx)
	if err != nil {
		s.log.Warn("the last write of the node's conditions before stopping failed", zap.Error(err))
		return
	}
	if wrote {
		s.metrics.writes.WithLabelValues("success").Inc()
	}
}

// write patches the Node's status with the reporter's state, stamped with
// this write's heartbeat. It writes nothing, and says so, before the
// reporter has started.
func (s *NodeSink) write(ctx context.Context) (bool, error) {
	s.mu.Lock()
	gen, state := s.generation, s.state
	s.mu.Unlock()
	if state == nil {
		return false, nil
	}
	now := metav1.Now()
	var conds []corev1.NodeCondition
	for _, c := range state.Conditions() {
		conds = append(conds, corev1.NodeCondition{
			Type:               corev1.NodeConditionType(c.Type),
			Status:             corev1.ConditionStatus(c.Status),
			Reason:             c.Reason,
			Message:            Truncate(c.Message, MaxMessageBytes),
			LastTransitionTime: metav1.NewTime(c.Since),
			LastHeartbeatTime:  now,
		})
	}
	if len(conds) == 0 {
		s.mu.Lock()
		s.written = gen
		s.mu.Unlock()
		return false, nil
	}
	if err := s.node.patchStatus(ctx, conds); err != nil {
		return true, err
	}
	s.mu.Lock()
	s.written = gen
	if s.written == s.generation {
		s.metrics.synced.Set(1)
	}
	s.mu.Unlock()
	return true, nil
}
