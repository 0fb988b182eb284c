package reporter

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
)

// PodLookup names a pod by UID and its container by ID, as the container
// runtime knows them (cripods.Names is one). It may have to ask, so it
// answers by ctx's end or fails.
type PodLookup interface {
	PodName(ctx context.Context, podUID, containerID string) (namespace, name, container string, err error)
}

// podLookupDeadline is how long an event waits for its pod's name: the
// runtime answers in milliseconds when it is well, and an event about a
// sick node must not wait on a runtime that is not.
const podLookupDeadline = 2 * time.Second

// nodeEvents sends events about the Node through client-go's event
// recorder, which aggregates similar events and retries them, behind a rate
// limit of its own that counts and summarises what it holds back.
type nodeEvents struct {
	nodeName string
	log      *zap.Logger
	pods     PodLookup
	// lookups are the events waiting for their pod's name; stopLookups
	// ends their wait, at shutdown, so that they go out without it.
	lookups     sync.WaitGroup
	lookupCtx   context.Context
	stopLookups context.CancelFunc
	mu          sync.Mutex
	stopped     bool // at shutdown; no lookup starts after it
	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	limits      *eventLimiter
	// summaryInterval is how often the held-back events are summarised.
	summaryInterval time.Duration
}

func newNodeEvents(client kube.Client, log *zap.Logger, reg prometheus.Registerer, opts NodeSinkOptions) *nodeEvents {
	broadcaster := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{
		QPS:       opts.EventQPS,
		BurstSize: opts.EventBurst,
	}))
	// Recording starts now, not in Run, so that no event emitted before Run
	// starts is dropped for want of a watcher.
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	lookupCtx, stopLookups := context.WithCancel(context.Background())
	return &nodeEvents{
		nodeName:        opts.NodeName,
		log:             log,
		pods:            opts.Pods,
		lookupCtx:       lookupCtx,
		stopLookups:     stopLookups,
		broadcaster:     broadcaster,
		recorder:        broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "nodeguard", Host: opts.NodeName}),
		limits:          newEventLimiter(opts.EventQPS, opts.EventBurst, opts.Reasons, reg),
		summaryInterval: opts.SummaryInterval,
	}
}

// nodeRef is the object events are about. Like the kubelet, it uses the node's
// name as its UID, which is what `kubectl describe node` searches for.
func (e *nodeEvents) nodeRef() *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", Name: e.nodeName, UID: types.UID(e.nodeName)}
}

// record sends one event, past the rate limit: the agent's own reports
// (an outage, the summary) are few and must not be the ones held back.
func (e *nodeEvents) record(eventType, reason, message string) {
	e.recorder.Event(e.nodeRef(), eventType, reason, Truncate(message, MaxMessageBytes))
}

// finding sends an event finding, if the rate limit lets it. One about a
// pod is sent once the pod is named, from a goroutine of its own, since a
// sink must not block; the rate limit bounds how many wait at once.
func (e *nodeEvents) finding(f finding.Finding) {
	eventType := string(f.Severity)
	if eventType == "" {
		eventType = corev1.EventTypeWarning
	}
	if !e.limits.allow(eventType, f.Reason, max(f.Count, 1), time.Now()) {
		return
	}
	e.mu.Lock()
	if f.PodUID == "" || e.pods == nil || e.stopped {
		e.mu.Unlock()
		e.record(eventType, f.Reason, f.Message)
		return
	}
	e.lookups.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.lookups.Done()
		e.record(eventType, f.Reason, e.named(f))
	}()
}

// named is f's message with its pod's namespace and name and its
// container's name added, or as it is if the runtime cannot say in time.
func (e *nodeEvents) named(f finding.Finding) string {
	ctx, cancel := context.WithTimeout(e.lookupCtx, podLookupDeadline)
	defer cancel()
	ns, name, container, err := e.pods.PodName(ctx, f.PodUID, f.ContainerID)
	if err != nil {
		e.log.Debug("event sent without its pod's name", zap.String("reason", f.Reason),
			zap.String("podUID", f.PodUID), zap.String("containerID", f.ContainerID), zap.Error(err))
		return f.Message
	}
	msg := f.Message + "; pod " + ns + "/" + name
	if container != "" {
		msg += ", container " + container
	}
	return msg
}

// summarise records, every summaryInterval, one event for the events the
// rate limit kept back, until ctx ends.
func (e *nodeEvents) summarise(ctx context.Context) {
	t := time.NewTicker(e.summaryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if msg := e.limits.summary(now); msg != "" {
				e.record(corev1.EventTypeWarning, "EventsSuppressed", msg)
			}
		}
	}
}

// shutdown stops event delivery: the events waiting for a pod's name are
// recorded without it, and what is queued is dropped.
func (e *nodeEvents) shutdown() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.stopLookups()
	e.lookups.Wait()
	e.broadcaster.Shutdown()
}

// eventLimiter sits in front of client-go's event recorder. That recorder's
// spam filter drops, silently, every event past its burst about one object
// and type; this limiter is a little stricter (five tokens under the same
// refill), so it is the one that refuses, and it counts what it refuses, by
// reason, for a metric and one summary event. The summary always fits in
// the recorder's five spare tokens. Before that limit come the user's
// settings per reason: off, a minimum of occurrences within a window, and
// an hourly budget, whose refusals are counted and summarised the same way.
type eventLimiter struct {
	mu         sync.Mutex
	limiters   map[string]*rate.Limiter // per event type, as client-go keys them
	qps        rate.Limit
	burst      int
	reasons    map[string]*reasonLimit
	suppressed map[string]int
	since      time.Time
	metric     *prometheus.CounterVec
	held       *prometheus.CounterVec
}

// reasonLimit is one reason's settings and what they keep.
type reasonLimit struct {
	policy finding.EventPolicy
	// seen are the occurrences within the window, for minOccurrences.
	seen   []time.Time
	budget *rate.Limiter
}

func newEventLimiter(qps float32, clientGoBurst int, reasons map[string]finding.EventPolicy, reg prometheus.Registerer) *eventLimiter {
	l := &eventLimiter{
		limiters: map[string]*rate.Limiter{}, qps: rate.Limit(qps), burst: max(clientGoBurst-5, 1),
		reasons:    map[string]*reasonLimit{},
		suppressed: map[string]int{},
		metric: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_suppressed_total",
			Help: "Events not sent to the API server because the node's event rate limit, or their reason's eventsPerHour, was spent, by reason; summarised in an EventsSuppressed event.",
		}, []string{"reason"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_held_total",
			Help: "Events not sent to the API server as reporter.reasons asks, by reason and why: disabled (enabled: false) or minOccurrences (fewer than that within the window so far).",
		}, []string{"reason", "why"}),
	}
	for reason, p := range reasons {
		rl := &reasonLimit{policy: p}
		if p.EventsPerHour > 0 {
			// The whole hour's budget may go in a burst, then it refills
			// evenly.
			rl.budget = rate.NewLimiter(rate.Every(time.Hour/time.Duration(p.EventsPerHour)), p.EventsPerHour)
		}
		l.reasons[reason] = rl
	}
	reg.MustRegister(l.metric, l.held)
	return l
}

// allow says whether an event that stands for n occurrences may be sent:
// its reason's settings first, then the node's rate limit, whose token it
// takes. What is refused is counted.
func (l *eventLimiter) allow(eventType, reason string, n int, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rl := l.reasons[reason]; rl != nil {
		p := rl.policy
		if p.Enabled != nil && !*p.Enabled {
			l.held.WithLabelValues(reason, "disabled").Add(float64(n))
			return false
		}
		if p.MinOccurrences > 1 {
			keep := rl.seen[:0]
			for _, t := range rl.seen {
				if now.Sub(t) < p.Window.Duration {
					keep = append(keep, t)
				}
			}
			for range min(n, p.MinOccurrences) {
				keep = append(keep, now)
			}
			if len(keep) < p.MinOccurrences {
				rl.seen = keep
				l.held.WithLabelValues(reason, "minOccurrences").Add(float64(n))
				return false
			}
			rl.seen = keep[:0]
		}
		if rl.budget != nil && !rl.budget.AllowN(now, 1) {
			l.suppressLocked(reason, now)
			return false
		}
	}
	lim, ok := l.limiters[eventType]
	if !ok {
		lim = rate.NewLimiter(l.qps, l.burst)
		l.limiters[eventType] = lim
	}
	if lim.AllowN(now, 1) {
		return true
	}
	l.suppressLocked(reason, now)
	return false
}

func (l *eventLimiter) suppressLocked(reason string, now time.Time) {
	if len(l.suppressed) == 0 {
		l.since = now
	}
	l.suppressed[reason]++
	l.metric.WithLabelValues(reason).Inc()
}

// summary returns the message of an EventsSuppressed event for what was
// suppressed since the last summary, and starts counting afresh; "" when
// nothing was.
func (l *eventLimiter) summary(now time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.suppressed) == 0 {
		return ""
	}
	total := 0
	parts := make([]string, 0, len(l.suppressed))
	for reason, n := range l.suppressed {
		total += n
		parts = append(parts, fmt.Sprintf("%s x%d", reason, n))
	}
	sort.Strings(parts)
	msg := fmt.Sprintf("%d events over the node's rate limit or their reason's hourly budget were not sent between %s and %s: %s; the agent's log and nodeguard_events_total have them all",
		total, l.since.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), strings.Join(parts, ", "))
	l.suppressed = map[string]int{}
	return msg
}
