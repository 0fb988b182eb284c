package reporter

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// eventLimiter sits in front of client-go's event recorder. That recorder's
// spam filter drops, silently, every event past its burst about one object
// and type; this limiter is a little stricter (five tokens under the same
// refill), so it is the one that refuses, and it counts what it refuses, by
// reason, for a metric and one summary event. The summary always fits in
// the recorder's five spare tokens.
type eventLimiter struct {
	mu         sync.Mutex
	limiters   map[string]*rate.Limiter // per event type, as client-go keys them
	qps        rate.Limit
	burst      int
	suppressed map[string]int
	since      time.Time
	metric     *prometheus.CounterVec
}

func newEventLimiter(qps float32, clientGoBurst int, reg prometheus.Registerer) *eventLimiter {
	l := &eventLimiter{
		limiters: map[string]*rate.Limiter{}, qps: rate.Limit(qps), burst: max(clientGoBurst-5, 1),
		suppressed: map[string]int{},
		metric: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_suppressed_total",
			Help: "Events not sent to the API server because the node's event rate limit was spent, by reason; summarised in an EventsSuppressed event.",
		}, []string{"reason"}),
	}
	reg.MustRegister(l.metric)
	return l
}

// allow takes a token for an event, or counts it as suppressed.
func (l *eventLimiter) allow(eventType, reason string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.limiters[eventType]
	if !ok {
		lim = rate.NewLimiter(l.qps, l.burst)
		l.limiters[eventType] = lim
	}
	if lim.AllowN(now, 1) {
		return true
	}
	if len(l.suppressed) == 0 {
		l.since = now
	}
	l.suppressed[reason]++
	l.metric.WithLabelValues(reason).Inc()
	return false
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
	msg := fmt.Sprintf("%d events over the node's rate limit were not sent between %s and %s: %s; the agent's log and nodeguard_events_total have them all",
		total, l.since.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), strings.Join(parts, ", "))
	l.suppressed = map[string]int{}
	return msg
}
