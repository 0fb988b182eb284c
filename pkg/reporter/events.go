package reporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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

const (
	// aggregateWindow and maxSimilar are client-go's event aggregation:
	// events of one type and reason with more than maxSimilar-1 messages
	// within aggregateWindow of each other become one combined event.
	aggregateWindow = 10 * time.Minute
	maxSimilar      = 10
	combinedPrefix  = "(combined from similar events): "
	// maxRemembered bounds the delivered events kept for their repeats to
	// count on (client-go keeps 4,096). An event the API server has let
	// expire (after an hour) is created again by its next repeat anyway.
	maxRemembered = 1024
	eventTTL      = time.Hour
	// loadWait is how long delivery waits at start for the spool left by
	// the last agent, so that its older records go first; a disk that
	// hangs must not hold back the new ones for longer.
	loadWait = 2 * time.Second
	// spoolRetry is how soon a failed or put-off spool write is tried
	// again.
	spoolRetry = time.Second
	// rewriteInterval is the least time between two writes of one
	// record's file: a crash loses at most this much of a repeating
	// event's count, never a record.
	rewriteInterval = time.Second
)

// nodeEvents delivers the events about the Node. Every event goes the same
// way, live or not: into the spool (memory, mirrored to files under
// stateDir by a goroutine of its own), then to the API server, oldest first
// within the node's event rate limit, and out of the spool once the server
// has it. An API server outage of any length, or an agent restart in it,
// loses nothing the spool had room for; what it had no room for is counted
// per reason and summarised in one EventsSuppressed event.
//
// client-go's event recorder is not used, not even for the live path: it
// says nothing of whether an event got through, so nothing could be taken
// out of a spool in front of it; it gives up after 12 tries; and it names
// each event by the time it is sent, so an event sent again after a restart
// would be a second Event. The typed client writes them instead, and this
// type does the recorder's aggregation itself: repeats of an event raise its
// count and last time, and similar events (one type and reason, many
// messages) are combined as the recorder combines them.
//
// A restart sends no event twice because names are idempotent: each
// record's Event name is chosen once, when the record is made, and kept in
// its file. Were the agent killed after a write and before the file's
// removal, the next agent's create of that name is refused as existing,
// and taken as delivered. A record of the last delivered event would need
// a second synced write per event and still leave that window open.
type nodeEvents struct {
	nodeName        string
	log             *zap.Logger
	client          kube.Client
	pods            PodLookup
	reach           *reachability // set by NewNodeSink
	requestTimeout  time.Duration
	maxRetry        time.Duration
	capacity        int
	gate            *reasonGate // guarded by mu
	summaryInterval time.Duration
	qps             float64
	burst           int
	disk            spoolDir // dir "" keeps the spool in memory only
	spoolPath       string   // for the log; disk's is the persister's
	now             func() time.Time
	metrics         eventMetrics

	// lookups are the events waiting for their pod's name; stopLookups
	// ends their wait, at shutdown, so that they go in without it.
	lookups     sync.WaitGroup
	lookupCtx   context.Context
	stopLookups context.CancelFunc

	wakeSend    chan struct{}
	wakePersist chan struct{}
	recovered   chan struct{}
	loaded      chan struct{}

	mu      sync.Mutex
	stopped bool // at shutdown; no lookup starts after it
	// pending are the records owed to the API server, by Seq.
	pending []*spoolEntry
	// queued counts the pending records that are not the agent's own,
	// which the cap applies to.
	queued int
	// byKey holds, by aggregation key, the newest record of each event
	// still pending or recently delivered, for repeats to add to.
	byKey   map[string]*spoolEntry
	similar map[string]*similarMessages
	// summary is the pending EventsSuppressed record, if any.
	summary     *spoolEntry
	lastSummary time.Time
	// lastDrop is when an event last found the spool full.
	lastDrop time.Time
	buckets  map[string]*tokenBucket
	lastSeq  uint64
	// onDisk is what the persister has written: by each record's Seq,
	// gen of the version in its file.
	onDisk map[uint64]onDisk
}

// spoolEntry is a record and its place in the delivery.
type spoolEntry struct {
	rec     eventRecord
	pending bool
	// gen counts changes, so that a write in flight, or to disk, knows
	// whether it carried the latest version.
	gen uint64
}

// similarMessages are the messages seen for one type and reason.
type similarMessages struct {
	msgs map[string]bool
	last time.Time
}

type eventMetrics struct {
	suppressed *prometheus.CounterVec
	invalid    *prometheus.CounterVec
	writes     *prometheus.CounterVec
	records    prometheus.Gauge
	corrupt    prometheus.Counter
}

func newEventMetrics(reg prometheus.Registerer) eventMetrics {
	m := eventMetrics{
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_suppressed_total",
			Help: "Events not sent to the API server because the event spool was full or their reason's eventsPerHour was spent, by reason; summarised in an EventsSuppressed event.",
		}, []string{"reason"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_invalid_total",
			Help: "Events the API server refused as invalid, by reason; logged and dropped, not retried.",
		}, []string{"reason"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_event_writes_total",
			Help: "Event creates and patches sent to the API server, by result (success, error, invalid).",
		}, []string{"result"}),
		records: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodeguard_event_spool_records",
			Help: "Event writes waiting in the spool for the API server.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodeguard_event_spool_corrupt_files_total",
			Help: "Spool files that could not be read back (truncated, garbage) and were skipped.",
		}),
	}
	reg.MustRegister(m.suppressed, m.invalid, m.writes, m.records, m.corrupt)
	return m
}

func newNodeEvents(client kube.Client, log *zap.Logger, reg prometheus.Registerer, opts NodeSinkOptions) *nodeEvents {
	lookupCtx, stopLookups := context.WithCancel(context.Background())
	e := &nodeEvents{
		nodeName: opts.NodeName, log: log, client: client, pods: opts.Pods,
		requestTimeout: opts.RequestTimeout, maxRetry: opts.MaxRetryInterval,
		capacity: opts.SpoolSize, summaryInterval: opts.SummaryInterval, gate: newReasonGate(opts.Reasons, reg),
		qps: float64(opts.EventQPS), burst: opts.EventBurst,
		disk: spoolDir{dir: opts.SpoolDir}, spoolPath: opts.SpoolDir, now: time.Now, metrics: newEventMetrics(reg),
		lookupCtx: lookupCtx, stopLookups: stopLookups,
		wakeSend: make(chan struct{}, 1), wakePersist: make(chan struct{}, 1),
		recovered: make(chan struct{}, 1), loaded: make(chan struct{}),
		byKey: map[string]*spoolEntry{}, similar: map[string]*similarMessages{},
		buckets: map[string]*tokenBucket{}, onDisk: map[uint64]onDisk{},
	}
	e.lastSeq = uint64(e.now().UnixNano())
	return e
}

// nodeRef is the object events are about. Like the kubelet, it uses the node's
// name as its UID, which is what `kubectl describe node` searches for.
func (e *nodeEvents) nodeRef() corev1.ObjectReference {
	return corev1.ObjectReference{Kind: "Node", Name: e.nodeName, UID: types.UID(e.nodeName)}
}

// record spools one of the agent's own reports (an outage): few, and not
// to be the ones held back, they pass the rate limit and the cap.
func (e *nodeEvents) record(eventType, reason, message string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	en := &spoolEntry{rec: eventRecord{V: spoolVersion, Type: eventType, Reason: reason,
		Message: Truncate(message, MaxMessageBytes), First: now, Last: now, Count: 1, Own: true}}
	e.enqueue(en)
}

// finding spools an event finding. One about a pod goes in once the pod is
// named, from a goroutine of its own, since a sink must not block.
func (e *nodeEvents) finding(f finding.Finding) {
	eventType := string(f.Severity)
	if eventType == "" {
		eventType = corev1.EventTypeWarning
	}
	at := f.Time
	if at.IsZero() {
		at = e.now()
	}
	e.mu.Lock()
	switch e.gate.admit(f.Reason, max(f.Count, 1), e.now()) {
	case held:
		e.mu.Unlock()
		return
	case overBudget:
		e.suppress(f.Reason, at, false)
		e.mu.Unlock()
		return
	}
	if f.PodUID == "" || e.pods == nil || e.stopped {
		e.add(eventType, f.Reason, f.Message, at)
		e.mu.Unlock()
		return
	}
	e.lookups.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.lookups.Done()
		msg := e.named(f)
		e.mu.Lock()
		defer e.mu.Unlock()
		e.add(eventType, f.Reason, msg, at)
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

// add spools an event that happened at at, as a repeat of one already
// spooled or sent when it is one, as a new record when there is room, or
// counts it as suppressed. e.mu is held.
func (e *nodeEvents) add(eventType, reason, message string, at time.Time) {
	key, message := e.aggregate(eventType, reason, Truncate(message, MaxMessageBytes), at)
	message = Truncate(message, MaxMessageBytes)
	if en := e.byKey[key]; en != nil {
		if !en.pending && e.full() {
			e.suppress(reason, at, true)
			return
		}
		en.rec.Count++
		en.rec.Message = message
		if at.After(en.rec.Last) {
			en.rec.Last = at
		}
		en.gen++
		if !en.pending {
			// Delivered: the repeat is a patch of the Event, queued
			// anew.
			en.rec.Seq = e.nextSeq()
			en.pending = true
			e.pending = append(e.pending, en)
			e.queued++
		}
		e.changed()
		return
	}
	if e.full() {
		e.suppress(reason, at, true)
		return
	}
	en := &spoolEntry{rec: eventRecord{V: spoolVersion, Type: eventType, Reason: reason, Message: message,
		Key: key, First: at, Last: at, Count: 1}}
	e.enqueue(en)
	e.remember(key, en, at)
}

// enqueue gives a new record its sequence number and name and queues it.
func (e *nodeEvents) enqueue(en *spoolEntry) {
	en.rec.Seq = e.nextSeq()
	en.rec.Name = eventName(e.nodeName, en.rec.Seq)
	en.pending = true
	en.gen = 1
	e.pending = append(e.pending, en)
	if !en.rec.Own {
		e.queued++
	}
	e.changed()
}

// aggregate returns the key an event is counted under and the message it
// is sent with, as client-go's aggregator makes them.
func (e *nodeEvents) aggregate(eventType, reason, message string, at time.Time) (string, string) {
	similarKey := eventType + "\x00" + reason
	s := e.similar[similarKey]
	if s == nil || at.Sub(s.last) > aggregateWindow {
		if len(e.similar) > maxRemembered {
			for k, old := range e.similar {
				if at.Sub(old.last) > aggregateWindow {
					delete(e.similar, k)
				}
			}
		}
		s = &similarMessages{msgs: map[string]bool{}}
		e.similar[similarKey] = s
	}
	if at.After(s.last) {
		s.last = at
	}
	// The set need not grow past the size that decides.
	if len(s.msgs) < maxSimilar {
		s.msgs[message] = true
	}
	if len(s.msgs) < maxSimilar {
		return similarKey + "\x00" + message, message
	}
	return similarKey + "\x00\x00combined", combinedPrefix + message
}

// remember keeps en for its key's repeats, forgetting delivered events
// past the bound: first those the API server has let expire.
func (e *nodeEvents) remember(key string, en *spoolEntry, at time.Time) {
	e.byKey[key] = en
	if len(e.byKey) <= maxRemembered {
		return
	}
	for k, old := range e.byKey {
		if !old.pending && at.Sub(old.rec.Last) > eventTTL {
			delete(e.byKey, k)
		}
	}
	for k, old := range e.byKey {
		if len(e.byKey) <= maxRemembered {
			break
		}
		if !old.pending {
			delete(e.byKey, k)
		}
	}
}

// full says whether the spool has no room for another event; the agent's
// own records do not count.
func (e *nodeEvents) full() bool { return e.queued >= e.capacity }

// suppress counts an event not spooled, for want of room in the spool
// (spoolFull) or of its reason's hourly budget, in the metric and in the
// one pending summary record.
func (e *nodeEvents) suppress(reason string, at time.Time, spoolFull bool) {
	e.metrics.suppressed.WithLabelValues(reason).Inc()
	if spoolFull {
		e.lastDrop = e.now()
	}
	s := e.summary
	if s == nil {
		s = &spoolEntry{rec: eventRecord{V: spoolVersion, Type: corev1.EventTypeWarning, Reason: "EventsSuppressed",
			First: at, Last: at, Count: 1, Own: true, Suppressed: map[string]int{}, Since: at}}
		e.enqueue(s)
		e.summary = s
	}
	s.rec.Suppressed[reason]++
	if at.After(s.rec.Last) {
		s.rec.Last = at
	}
	s.rec.Message = e.summaryMessage(&s.rec)
	s.gen++
	e.changed()
}

func (e *nodeEvents) summaryMessage(rec *eventRecord) string {
	total := 0
	parts := make([]string, 0, len(rec.Suppressed))
	for reason, n := range rec.Suppressed {
		total += n
		parts = append(parts, fmt.Sprintf("%s x%d", reason, n))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d events were not sent, the node's event spool (%d events) full or their reason's hourly budget spent, between %s and %s: %s; the agent's log and nodeguard_events_total have them all",
		total, e.capacity, rec.Since.UTC().Format(time.RFC3339), rec.Last.UTC().Format(time.RFC3339), strings.Join(parts, ", "))
}

// lastDropped is when an event last found the spool full; zero if never.
func (e *nodeEvents) lastDropped() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastDrop
}

// nextSeq numbers records by the time they are made, so that the records
// of an earlier agent sort before this one's.
func (e *nodeEvents) nextSeq() uint64 {
	s := uint64(e.now().UnixNano())
	if s <= e.lastSeq {
		s = e.lastSeq + 1
	}
	e.lastSeq = s
	return s
}

// eventName names an Event as client-go does, the object's name and a hex
// number, here the record's sequence number, so that it is unique and
// fixed when the record is made. The node's part is cut if it would make
// the name too long to be an object's.
func eventName(node string, seq uint64) string {
	suffix := fmt.Sprintf(".%x", seq)
	if max := 253 - len(suffix); len(node) > max {
		node = strings.TrimRight(node[:max], ".-")
	}
	return node + suffix
}

// changed wakes the sender and the persister. e.mu is held.
func (e *nodeEvents) changed() {
	e.metrics.records.Set(float64(len(e.pending)))
	for _, c := range []chan struct{}{e.wakeSend, e.wakePersist} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// signalRecovered ends a wait to retry, when the API server answers again.
func (e *nodeEvents) signalRecovered() {
	select {
	case e.recovered <- struct{}{}:
	default:
	}
}

// run delivers the spool until ctx ends, then spools the events waiting
// for a pod's name and writes what is not on disk yet, within
// finalWriteTimeout, for the next agent.
func (e *nodeEvents) run(ctx context.Context) {
	persistCtx, stopPersist := context.WithCancel(context.Background())
	persisted := make(chan struct{})
	go func() {
		defer close(persisted)
		e.persist(persistCtx)
	}()
	e.deliver(ctx)
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.stopLookups()
	e.lookups.Wait()
	stopPersist()
	t := time.NewTimer(finalWriteTimeout)
	defer t.Stop()
	select {
	case <-persisted:
	case <-t.C:
		// Left to the kernel: a write cannot be cancelled once the disk
		// hangs, and the agent is stopping.
		e.log.Warn("the event spool was not written to disk before stopping; events not yet sent may be lost", zap.String("dir", e.spoolPath))
	}
}

// deliver sends the spool's records until ctx ends.
func (e *nodeEvents) deliver(ctx context.Context) {
	wait := time.NewTimer(loadWait)
	select {
	case <-ctx.Done():
		wait.Stop()
		return
	case <-e.loaded:
	case <-wait.C:
	}
	wait.Stop()
	retry := initialRetry
	for {
		en, rec, gen, idle := e.next(e.now())
		if en == nil {
			if !e.idle(ctx, idle) {
				return
			}
			continue
		}
		sent := e.now()
		err := e.send(ctx, &rec)
		if err == nil || invalidEvent(err) {
			e.reach.observeSent(sent, err)
			e.done(en, rec, gen, err)
			retry = initialRetry
			continue
		}
		e.putBack(rec)
		if ctx.Err() != nil {
			// Stopping: the record stays for the next agent.
			return
		}
		e.reach.observeSent(sent, err)
		e.metrics.writes.WithLabelValues("error").Inc()
		// Once per failing streak: through an outage every retry fails
		// alike, and the reachability log says when it ends.
		level := zap.DebugLevel
		if retry == initialRetry {
			level = zap.WarnLevel
		}
		e.log.Log(level, "writing an event failed; it stays in the spool and will be retried", zap.String("reason", rec.Reason),
			zap.String("event", rec.Name), zap.Error(err), zap.Duration("retry", retry))
		if !e.waitToRetry(ctx, err, retry) {
			return
		}
		retry = min(2*retry, retryCapFor(err, e.maxRetry))
	}
}

// idle waits for a change to the spool, or for d when it is above 0;
// false once ctx has ended.
func (e *nodeEvents) idle(ctx context.Context, d time.Duration) bool {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-e.wakeSend:
	case <-timer:
	}
	return true
}

// waitToRetry waits out a backoff, cut short when the API server answers
// again; false once ctx has ended.
func (e *nodeEvents) waitToRetry(ctx context.Context, err error, retry time.Duration) bool {
	recovered := e.recovered
	if !unreachable(err) {
		recovered = nil
	}
	t := time.NewTimer(jitter(retry))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-recovered:
	case <-t.C:
	}
	return true
}

// next picks the oldest record that may be sent now and takes its rate
// token; with none, it says how long until one may (0: none is waiting on
// time).
func (e *nodeEvents) next(now time.Time) (*spoolEntry, eventRecord, uint64, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var idle time.Duration
	later := func(d time.Duration) {
		if idle == 0 || d < idle {
			idle = d
		}
	}
	for _, en := range e.pending {
		if en == e.summary && !e.lastSummary.IsZero() {
			// One summary per interval, as before the spool; the counts
			// go on adding up in it meanwhile.
			if d := e.lastSummary.Add(e.summaryInterval).Sub(now); d > 0 {
				later(d)
				continue
			}
		}
		if !en.rec.Own {
			b := e.bucket(en.rec.Type)
			if d := b.wait(now); d > 0 {
				later(d)
				continue
			}
			b.take()
		}
		return en, en.rec, en.gen, 0
	}
	return nil, eventRecord{}, 0, idle
}

func (e *nodeEvents) bucket(eventType string) *tokenBucket {
	b, ok := e.buckets[eventType]
	if !ok {
		b = &tokenBucket{rate: e.qps, burst: float64(e.burst)}
		e.buckets[eventType] = b
	}
	return b
}

// putBack returns the token of a write that failed for want of a server.
func (e *nodeEvents) putBack(rec eventRecord) {
	if rec.Own {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bucket(rec.Type).give()
}

// done takes a record out of the spool once the API server has it, or
// has refused it as invalid; one changed while its write was in flight
// stays, to patch the Event with what changed.
func (e *nodeEvents) done(en *spoolEntry, sent eventRecord, gen uint64, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.metrics.writes.WithLabelValues("invalid").Inc()
		e.metrics.invalid.WithLabelValues(sent.Reason).Inc()
		e.log.Error("the API server refused an event as invalid; it is dropped", zap.String("event", sent.Name),
			zap.String("reason", sent.Reason), zap.String("message", sent.Message), zap.Error(err))
		e.unqueue(en)
		if en.rec.Key != "" && e.byKey[en.rec.Key] == en {
			delete(e.byKey, en.rec.Key)
		}
		if en == e.summary {
			e.summary = nil
		}
		e.changed()
		return
	}
	e.metrics.writes.WithLabelValues("success").Inc()
	if en == e.summary {
		e.lastSummary = e.now()
	}
	if !en.rec.Created {
		en.rec.Created = true
		if en.gen != gen {
			en.gen++ // the file must say so too
		}
	}
	if en.gen != gen {
		e.changed()
		return
	}
	e.unqueue(en)
	if en == e.summary {
		e.summary = nil
	}
	e.changed()
}

func (e *nodeEvents) unqueue(en *spoolEntry) {
	en.pending = false
	if i := slices.Index(e.pending, en); i >= 0 {
		e.pending = slices.Delete(e.pending, i, i+1)
		if !en.rec.Own {
			e.queued--
		}
	}
}

// send writes rec: a create, or a patch of the Event an earlier write made.
// A create refused because the Event exists (an agent killed before it
// could take the record out of the spool) is a delivery, made exact by a
// patch; a patch of an Event the server has let expire creates it again.
func (e *nodeEvents) send(ctx context.Context, rec *eventRecord) error {
	if rec.Created {
		err := e.patch(ctx, rec)
		if !apierrors.IsNotFound(err) {
			return err
		}
		return e.create(ctx, rec)
	}
	err := e.create(ctx, rec)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	e.log.Info("the event was on the API server already, sent before a restart; it is not created again",
		zap.String("event", rec.Name), zap.String("reason", rec.Reason))
	return e.patch(ctx, rec)
}

func (e *nodeEvents) create(ctx context.Context, rec *eventRecord) error {
	ev := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: rec.Name, Namespace: metav1.NamespaceDefault},
		InvolvedObject:      e.nodeRef(),
		Reason:              rec.Reason,
		Message:             rec.Message,
		Type:                rec.Type,
		FirstTimestamp:      metav1.NewTime(rec.First),
		LastTimestamp:       metav1.NewTime(rec.Last),
		Count:               rec.Count,
		Source:              corev1.EventSource{Component: "nodeguard", Host: e.nodeName},
		ReportingController: "nodeguard",
		ReportingInstance:   e.nodeName,
	}
	reqCtx, cancel := context.WithTimeout(ctx, e.requestTimeout)
	defer cancel()
	if _, err := e.client.CoreV1().Events(metav1.NamespaceDefault).Create(reqCtx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating event %s: %w", rec.Name, err)
	}
	return nil
}

// patch sets the Event's count, last time and message, as client-go's
// recorder patches a repeat; the values are absolute, so a patch sent
// twice changes nothing.
func (e *nodeEvents) patch(ctx context.Context, rec *eventRecord) error {
	patch, err := json.Marshal(map[string]any{
		"count": rec.Count, "lastTimestamp": metav1.NewTime(rec.Last), "message": rec.Message,
	})
	if err != nil {
		return fmt.Errorf("encoding the patch of event %s: %w", rec.Name, err)
	}
	reqCtx, cancel := context.WithTimeout(ctx, e.requestTimeout)
	defer cancel()
	if _, err := e.client.CoreV1().Events(metav1.NamespaceDefault).Patch(reqCtx, rec.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patching event %s: %w", rec.Name, err)
	}
	return nil
}

// invalidEvent says whether the API server refused an event for what it
// holds: sent again, it would be refused again, for ever.
func invalidEvent(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	switch status.Status().Code {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return true
	}
	return false
}

// persist mirrors the spool to its directory until ctx ends, and once more
// then. It first loads what an earlier agent left there.
func (e *nodeEvents) persist(ctx context.Context) {
	if e.disk.dir == "" {
		close(e.loaded)
		return
	}
	e.load()
	close(e.loaded)
	retry := time.NewTimer(spoolRetry)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			e.persistOnce(true)
			return
		case <-e.wakePersist:
		case <-retry.C:
		}
		if !e.persistOnce(false) {
			retry.Reset(spoolRetry)
		}
	}
}

// load adopts the records an earlier agent left, before any of this one's.
func (e *nodeEvents) load() {
	recs, corrupt, err := e.disk.load()
	for _, c := range corrupt {
		e.log.Warn("skipped a spool file that is not a whole record", zap.String("dir", e.disk.dir), zap.String("file", c.name), zap.Error(c.err))
	}
	e.metrics.corrupt.Add(float64(len(corrupt)))
	if err != nil {
		e.log.Error("the event spool cannot be used; events are kept in memory only, and lost if the agent stops before sending them",
			zap.String("dir", e.disk.dir), zap.Error(err))
		e.mu.Lock()
		e.disk.dir = ""
		e.mu.Unlock()
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	seqs := map[uint64]bool{}
	for _, en := range e.pending {
		seqs[en.rec.Seq] = true
	}
	for _, rec := range recs {
		en := &spoolEntry{rec: *rec, pending: true, gen: 1}
		if seqs[rec.Seq] {
			// Only a clock set back can do this; the new record keeps the
			// file, and this one gets a number of its own.
			en.rec.Seq = e.nextSeq()
		} else {
			e.onDisk[rec.Seq] = onDisk{gen: en.gen}
		}
		if rec.Seq > e.lastSeq {
			e.lastSeq = rec.Seq
		}
		e.pending = append(e.pending, en)
		if !rec.Own {
			e.queued++
		}
		if rec.Key != "" && e.byKey[rec.Key] == nil {
			e.byKey[rec.Key] = en
		}
		if rec.Own && rec.Suppressed != nil && e.summary == nil {
			e.summary = en
		}
	}
	sort.SliceStable(e.pending, func(i, j int) bool { return e.pending[i].rec.Seq < e.pending[j].rec.Seq })
	if len(recs) > 0 {
		e.log.Info("events left in the spool by the last agent will be sent", zap.Int("events", len(recs)), zap.String("dir", e.disk.dir))
	}
	e.changed()
}

// persistOnce writes the records whose file is missing or stale and
// removes the files of those sent; it says whether all is on disk. Only
// the final pass rewrites a file written less than rewriteInterval ago.
func (e *nodeEvents) persistOnce(final bool) bool {
	now := e.now()
	later := false
	e.mu.Lock()
	if e.disk.dir == "" {
		e.mu.Unlock()
		return true
	}
	var (
		writes  []eventRecord
		gens    []uint64
		removes []uint64
	)
	wanted := make(map[uint64]bool, len(e.pending))
	for _, en := range e.pending {
		wanted[en.rec.Seq] = true
		d, ok := e.onDisk[en.rec.Seq]
		switch {
		case ok && d.gen == en.gen:
		case ok && !final && now.Sub(d.at) < rewriteInterval:
			// A repeat's new count waits: a flood of one event would
			// otherwise rewrite and sync its file thousands of times a
			// second. New records are written at once.
			later = true
		default:
			rec := en.rec
			// The summary's counts go on changing under e.mu while the
			// copy is encoded without it.
			rec.Suppressed = maps.Clone(rec.Suppressed)
			writes = append(writes, rec)
			gens = append(gens, en.gen)
		}
	}
	for seq := range e.onDisk {
		if !wanted[seq] {
			removes = append(removes, seq)
		}
	}
	e.mu.Unlock()
	if len(writes) == 0 && len(removes) == 0 {
		return !later
	}
	var errs []error
	wrote := make([]bool, len(writes))
	for i := range writes {
		if err := e.disk.write(&writes[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		wrote[i] = true
	}
	removed := make([]bool, len(removes))
	for i, seq := range removes {
		if err := e.disk.remove(seq); err != nil {
			errs = append(errs, err)
			continue
		}
		removed[i] = true
	}
	if err := e.disk.syncDir(); err != nil {
		errs = append(errs, err)
	}
	e.mu.Lock()
	for i, rec := range writes {
		if wrote[i] {
			e.onDisk[rec.Seq] = onDisk{gen: gens[i], at: now}
		}
	}
	for i, seq := range removes {
		if removed[i] {
			delete(e.onDisk, seq)
		}
	}
	e.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		e.log.Warn("writing the event spool failed; will retry", zap.String("dir", e.disk.dir), zap.Error(err))
		return false
	}
	return !later
}

// onDisk is the version of a record in its file, and when it was written.
type onDisk struct {
	gen uint64
	at  time.Time
}

// tokenBucket is the node's event rate limit for one event type, as
// client-go's spam filter keys it. Unlike the recorder's filter it drops
// nothing: a record with no token waits in the spool for one.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// wait says how long until a token is there; 0 when one is.
func (b *tokenBucket) wait(now time.Time) time.Duration {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		return 0
	}
	// Rounded up, so that the wait ends with the token there.
	return time.Duration(math.Ceil((1 - b.tokens) / b.rate * float64(time.Second)))
}

func (b *tokenBucket) take() { b.tokens-- }

func (b *tokenBucket) give() { b.tokens = min(b.burst, b.tokens+1) }
