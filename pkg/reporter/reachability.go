package reporter

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// reachability is the agent's own view of the API server, from the results
// of its requests (status writes, the Lease watch). An outage cannot be
// reported through the API server while it lasts, so it goes to the log and
// metrics at once, and to the Node as one event, with its start and length,
// when the server answers again, if it lasted at least minOutageEvent.
type reachability struct {
	log     *zap.Logger
	record  func(eventType, reason, message string)
	up      prometheus.Gauge
	outages prometheus.Counter
	now     func() time.Time
	// onRecover, when set, is called when a request gets through after an
	// outage, so that writes waiting out a backoff go now.
	onRecover func()

	mu      sync.Mutex
	down    bool
	since   time.Time
	lastErr error
	// upSince is when the last outage ended; zero before any.
	upSince time.Time
}

// state says whether the server answers, and since when it has since an
// outage (zero when there has been none).
func (r *reachability) state() (up bool, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.down, r.upSince
}

// minOutageEvent is the shortest outage worth an event on the Node. Shorter
// ones are in the log and the metrics only: when every node reports at once,
// requests wait in the API server's queues past their deadline, and with
// 5,000 simulated nodes some 4,000 of them wrote an outage event in the
// middle of that storm (hack/bench). 30 s is less than the node controller's
// grace before it marks a silent node NotReady.
const minOutageEvent = 30 * time.Second

func newReachability(log *zap.Logger, reg prometheus.Registerer, record func(eventType, reason, message string)) *reachability {
	r := &reachability{log: log, record: record, now: time.Now,
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nodeguard_apiserver_reachable",
			Help: "1 while the agent's requests reach the API server, 0 during an outage."}),
		outages: prometheus.NewCounter(prometheus.CounterOpts{Name: "nodeguard_apiserver_outages_total",
			Help: "Times the agent lost the API server and got it back."}),
	}
	r.up.Set(1)
	reg.MustRegister(r.up, r.outages)
	return r
}

// unreachable tells an error that says the server was not reached (a
// connection refused or reset, a timeout, a failing server) from one the
// server gave on purpose (not found, forbidden, invalid). 429 is an answer:
// the server is up and throttling this client, whose requests client-go
// retries.
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code >= 500 || code == 0
	}
	return true // no answer from the server at all: refused, reset, timed out
}

// observe takes the result of one request that has just ended.
func (r *reachability) observe(err error) { r.observeSent(r.now(), err) }

// observeSent takes the result of one request sent at sent. An outage
// starts when its first failed request was sent, not when it gave up: a
// request into a black hole fails only at its deadline, and measuring from
// there would cut that much from the outage.
func (r *reachability) observeSent(sent time.Time, err error) {
	if err != nil && !unreachable(err) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	switch {
	case err != nil && !r.down:
		r.down, r.since, r.lastErr = true, sent, err
		r.up.Set(0)
		r.log.Warn("the API server is unreachable from this node", zap.Error(err))
	case err != nil:
		r.lastErr = err
	case r.down:
		r.down, r.upSince = false, now
		r.up.Set(1)
		r.outages.Inc()
		if r.onRecover != nil {
			r.onRecover()
		}
		lasted := now.Sub(r.since).Round(time.Second)
		r.log.Info("the API server is reachable again", zap.Duration("outage", lasted), zap.Time("since", r.since))
		if now.Sub(r.since) < minOutageEvent {
			return
		}
		r.record(corev1.EventTypeWarning, "APIServerUnreachable", fmt.Sprintf(
			"this node could not reach the API server from %s for %s (last error: %v)",
			r.since.UTC().Format(time.RFC3339), lasted, r.lastErr))
	}
}
