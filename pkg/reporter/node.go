package reporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

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
	// BootTime is when this node booted. A condition left True by an earlier
	// agent is kept on start only if it became True after BootTime: a reboot
	// ends the kernel problems of the boot before it.
	BootTime time.Time
	// EventQPS and EventBurst rate-limit events about the Node per event type,
	// as client-go's spam filter keys them; client-go also aggregates similar
	// events.
	EventQPS   float32
	EventBurst int
	// SummaryInterval is how often events suppressed by the rate limit are
	// summarised in one EventsSuppressed event.
	SummaryInterval time.Duration
	// Pods, when set, names the pod of a finding that carries a pod UID.
	Pods PodLookup
	// Adopted, when set, is told each owned condition's status as taken
	// from the Node at start (for the metrics to match the Node).
	Adopted func(condType string, status finding.Status)
}

// NodeSink writes the owned conditions to the Node's status and events about
// the Node. It never loses the newest state: a failed write is retried with
// backoff, and each write sends whatever is newest at the time.
type NodeSink struct {
	client   kube.Client
	opts     NodeSinkOptions
	log      *zap.Logger
	defaults []finding.ConditionDefault
	metrics  *nodeSinkMetrics

	recorder    record.EventRecorder
	broadcaster record.EventBroadcaster

	reach  *reachability
	limits *eventLimiter

	mu sync.Mutex
	// desired holds every owned type once the node has been read; before that
	// only the types a finding has set.
	desired map[string]corev1.NodeCondition
	// generation counts changes to desired, so that a write knows whether
	// something changed while it was in flight.
	generation uint64
	written    uint64
	wake       chan struct{}
	// recovered is signalled when the API server answers again after an
	// outage.
	recovered chan struct{}
}

type nodeSinkMetrics struct {
	writes *prometheus.CounterVec
	synced prometheus.Gauge
	last   prometheus.Gauge
}

// NewNodeSink returns a sink for the node named in opts. Call Run to start
// writing.
func NewNodeSink(client kube.Client, log *zap.Logger, reg prometheus.Registerer, defaults []finding.ConditionDefault, opts NodeSinkOptions) *NodeSink {
	if opts.MinWriteInterval <= 0 {
		opts.MinWriteInterval = time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 5 * time.Minute
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.MaxRetryInterval <= 0 {
		opts.MaxRetryInterval = 10 * time.Second
	}
	if opts.EventQPS <= 0 {
		opts.EventQPS = 1.0 / 30
	}
	if opts.EventBurst <= 0 {
		opts.EventBurst = 25
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
	broadcaster := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{
		QPS:       opts.EventQPS,
		BurstSize: opts.EventBurst,
	}))
	// Recording starts now, not in Run, so that no event emitted before Run
	// starts is dropped for want of a watcher.
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	s := &NodeSink{
		client:      client,
		opts:        opts,
		log:         log,
		defaults:    defaults,
		metrics:     m,
		broadcaster: broadcaster,
		recorder:    broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "nodeguard", Host: opts.NodeName}),
		desired:     map[string]corev1.NodeCondition{},
		wake:        make(chan struct{}, 1),
		recovered:   make(chan struct{}, 1),
	}
	s.limits = newEventLimiter(opts.EventQPS, opts.EventBurst, reg)
	s.reach = newReachability(log, reg, func(eventType, reason, message string) {
		s.recorder.Event(s.nodeRef(), eventType, reason, Truncate(message, MaxMessageBytes))
	})
	s.reach.onRecover = func() {
		select {
		case s.recovered <- struct{}{}:
		default:
		}
	}
	return s
}

// ObserveAPI takes the result of one of the agent's requests to the API
// server, for its view of whether the server is reachable. The sink's own
// writes are observed already; other users (the Lease watch) call this.
func (s *NodeSink) ObserveAPI(err error) { s.reach.observe(err) }

// nodeRef is the object events are about. Like the kubelet, it uses the node's
// name as its UID, which is what `kubectl describe node` searches for.
func (s *NodeSink) nodeRef() *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: s.opts.NodeName, UID: types.UID(s.opts.NodeName)}
}

// Finding records an event or updates the desired conditions.
func (s *NodeSink) Finding(f finding.Finding) {
	switch f.Kind {
	case finding.KindEvent:
		eventType := string(f.Severity)
		if eventType == "" {
			eventType = corev1.EventTypeWarning
		}
		if !s.limits.allow(eventType, f.Reason, time.Now()) {
			return
		}
		msg := f.Message
		if f.PodUID != "" && s.opts.Pods != nil {
			if ns, name, ok := s.opts.Pods.PodName(f.PodUID); ok {
				msg += "; pod " + ns + "/" + name
			}
		}
		s.recorder.Event(s.nodeRef(), eventType, f.Reason, Truncate(msg, MaxMessageBytes))
	case finding.KindCondition:
		s.mu.Lock()
		s.setLocked(f.Type, corev1.ConditionStatus(f.Status), f.Reason, f.Message, f.Time)
		s.mu.Unlock()
	}
}

func (s *NodeSink) setLocked(condType string, status corev1.ConditionStatus, reason, message string, at time.Time) {
	prev, had := s.desired[condType]
	c := corev1.NodeCondition{
		Type:    corev1.NodeConditionType(condType),
		Status:  status,
		Reason:  reason,
		Message: Truncate(message, MaxMessageBytes),
	}
	if had && prev.Status == status {
		c.LastTransitionTime = prev.LastTransitionTime
	} else {
		c.LastTransitionTime = metav1.NewTime(at)
	}
	if had && prev == c {
		return
	}
	s.desired[condType] = c
	s.generation++
	s.metrics.synced.Set(0)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// finalWriteTimeout bounds the write of what is pending when the sink
// stops, inside the agent's shutdown grace.
const finalWriteTimeout = 1500 * time.Millisecond

// Run writes the node status until ctx ends, then writes once more what is
// still pending, and stops event delivery. Cancel ctx only once nothing
// will report any more (the checks have stopped), so that the last
// findings go out.
func (s *NodeSink) Run(ctx context.Context) error {
	defer s.broadcaster.Shutdown()
	go s.summarise(ctx)

	if err := s.syncFromNode(ctx); err != nil {
		return err
	}
	// Without the Node read (ctx ended first), a write could overwrite
	// conditions the agent has not adopted yet: no flush then.
	if ctx.Err() == nil {
		defer s.flush()
	}
	var (
		lastWrite time.Time
		owed      bool // the last write failed
		retry     = 100 * time.Millisecond
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
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		sent := time.Now()
		err := s.write(ctx)
		lastWrite = time.Now()
		if ctx.Err() == nil {
			s.reach.observeSent(sent, err)
		}
		if err != nil {
			owed = true
			s.metrics.writes.WithLabelValues("error").Inc()
			s.log.Warn("writing node conditions failed; will retry", zap.Error(err), zap.Duration("retry", retry))
			var ok bool
			if retry, ok = s.waitToRetry(ctx, err, retry); !ok {
				return nil
			}
			continue
		}
		owed = false
		retry = 100 * time.Millisecond
		s.drainRecovered()
		s.metrics.writes.WithLabelValues("success").Inc()
		s.metrics.last.Set(float64(lastWrite.Unix()))
		if !heartbeat.Stop() {
			select {
			case <-heartbeat.C:
			default:
			}
		}
		heartbeat.Reset(heartbeatJitter(s.opts.Heartbeat))
	}
}

// summarise records, every SummaryInterval, one event for the events the
// rate limit kept back, until ctx ends.
func (s *NodeSink) summarise(ctx context.Context) {
	t := time.NewTicker(s.opts.SummaryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if msg := s.limits.summary(now); msg != "" {
				s.recorder.Event(s.nodeRef(), corev1.EventTypeWarning, "EventsSuppressed", Truncate(msg, MaxMessageBytes))
			}
		}
	}
}

// refusedRetryInterval caps the backoff after an answer that retrying soon
// will not change: forbidden (RBAC, the admission policies), not found (a
// node name that is not the Node's), invalid. Such a node cannot report
// until someone fixes it; retrying every few seconds only adds load.
const refusedRetryInterval = 5 * time.Minute

// retryCap is the most to wait before retrying after err.
func (s *NodeSink) retryCap(err error) time.Duration {
	var status apierrors.APIStatus
	if errors.As(err, &status) && !unreachable(err) {
		switch status.Status().Code {
		case http.StatusConflict, http.StatusTooManyRequests:
		default:
			return refusedRetryInterval
		}
	}
	return s.opts.MaxRetryInterval
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
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

// syncFromNode reads the Node once, retrying until it succeeds, and fills in
// each owned type that no finding has set yet: from the API server when the
// condition there is still current, otherwise with the healthy default.
func (s *NodeSink) syncFromNode(ctx context.Context) error {
	retry := 100 * time.Millisecond
	for {
		reqCtx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		sent := time.Now()
		node, err := s.client.CoreV1().Nodes().Get(reqCtx, s.opts.NodeName, metav1.GetOptions{})
		cancel()
		if ctx.Err() == nil {
			s.reach.observeSent(sent, err)
		}
		if err == nil {
			s.drainRecovered()
			s.adopt(node.Status.Conditions)
			return nil
		}
		s.log.Warn("reading the node failed; will retry", zap.String("node", s.opts.NodeName), zap.Error(err))
		var ok bool
		if retry, ok = s.waitToRetry(ctx, err, retry); !ok {
			return nil
		}
	}
}

// waitToRetry waits out the backoff after err and returns the next one,
// or false once ctx has ended. When err says the server was not reached, a
// sign that it is back (another request of the agent's got through) ends
// the wait early, but the backoff stands until a request succeeds: a
// server whose Lease watch works while status writes fail must not be
// retried at the Lease's pace. An error the server gave (a 5xx from a
// failing webhook, a 403) is not helped by the server being up.
func (s *NodeSink) waitToRetry(ctx context.Context, err error, retry time.Duration) (time.Duration, bool) {
	recovered := s.recovered
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		recovered = nil
	}
	select {
	case <-ctx.Done():
		return retry, false
	case <-recovered:
		return retry, true
	case <-time.After(jitter(retry)):
	}
	return min(2*retry, s.retryCap(err)), true
}

// drainRecovered forgets a recovery signal that a success has made moot,
// so that it does not cut short a later, unrelated backoff.
func (s *NodeSink) drainRecovered() {
	select {
	case <-s.recovered:
	default:
	}
}

func (s *NodeSink) adopt(current []corev1.NodeCondition) {
	adopted := s.adoptLocked(current)
	// The metrics skip a type a finding has set already, whichever of the
	// two came first here.
	if s.opts.Adopted != nil {
		for _, d := range s.defaults {
			if status, ok := adopted[d.Type]; ok {
				s.opts.Adopted(d.Type, status)
			}
		}
	}
}

// adoptLocked takes the lock, fills in the desired conditions and returns
// their statuses.
func (s *NodeSink) adoptLocked(current []corev1.NodeCondition) map[string]finding.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	existing := map[string]corev1.NodeCondition{}
	for _, c := range current {
		existing[string(c.Type)] = c
	}
	for _, d := range s.defaults {
		have, inAPI := existing[d.Type]
		if want, set := s.desired[d.Type]; set {
			// A finding came first; keep its state but not a needless
			// transition time.
			if inAPI && have.Status == want.Status {
				want.LastTransitionTime = have.LastTransitionTime
				s.desired[d.Type] = want
			}
			continue
		}
		stale := have.Status == corev1.ConditionTrue && have.LastTransitionTime.Time.Before(s.opts.BootTime)
		if inAPI && !stale {
			have.LastHeartbeatTime = metav1.Time{}
			s.desired[d.Type] = have
			continue
		}
		s.desired[d.Type] = corev1.NodeCondition{
			Type:               corev1.NodeConditionType(d.Type),
			Status:             corev1.ConditionFalse,
			Reason:             d.Reason,
			Message:            d.Message,
			LastTransitionTime: metav1.Now(),
		}
	}
	s.generation++
	out := map[string]finding.Status{}
	for _, d := range s.defaults {
		if c, ok := s.desired[d.Type]; ok {
			out[d.Type] = finding.Status(c.Status)
		}
	}
	return out
}

// flush writes the desired conditions if any change has not gone out.
func (s *NodeSink) flush() {
	s.mu.Lock()
	pending := s.generation != s.written
	s.mu.Unlock()
	if !pending {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalWriteTimeout)
	defer cancel()
	if err := s.write(ctx); err != nil {
		s.log.Warn("the last write of the node's conditions before stopping failed", zap.Error(err))
		return
	}
	s.metrics.writes.WithLabelValues("success").Inc()
}

// write patches the owned conditions with a strategic-merge patch on the
// status subresource. Conditions merge by type, so the patch carries only
// nodeguard's types and cannot touch the kubelet's; it needs no resource
// version (no read-modify-write, no conflicts with the kubelet's own status
// updates), and unlike server-side apply it does not rewrite managedFields on
// every heartbeat.
func (s *NodeSink) write(ctx context.Context) error {
	s.mu.Lock()
	gen := s.generation
	now := metav1.Now()
	conds := make([]corev1.NodeCondition, 0, len(s.desired))
	for _, d := range s.defaults {
		c, ok := s.desired[d.Type]
		if !ok {
			continue
		}
		c.LastHeartbeatTime = now
		conds = append(conds, c)
	}
	s.mu.Unlock()
	if len(conds) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return fmt.Errorf("encoding the status patch: %w", err)
	}
	reqCtx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	if _, err := s.client.CoreV1().Nodes().PatchStatus(reqCtx, s.opts.NodeName, patch); err != nil {
		return fmt.Errorf("patching status of node %s: %w", s.opts.NodeName, err)
	}
	s.mu.Lock()
	s.written = gen
	if s.written == s.generation {
		s.metrics.synced.Set(1)
	}
	s.mu.Unlock()
	return nil
}
