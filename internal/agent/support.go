package agent

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/procfs"
	"go.uber.org/zap"
)

// logSink puts each finding in the agent's own log, so that journald and
// container logs hold them even when the API server is away.
type logSink struct{ log *zap.Logger }

func (s logSink) Start(reporter.State) {}

func (s logSink) Event(f finding.Finding) { s.finding(f) }

func (s logSink) Changed(c reporter.Condition) { s.finding(c.Finding) }

func (s logSink) finding(f finding.Finding) {
	s.log.Info("finding", zap.String("kind", string(f.Kind)), zap.String("check", f.Check),
		zap.String("reason", f.Reason), zap.String("condition", f.Type), zap.String("status", string(f.Status)),
		zap.String("message", f.Message), zap.String("source", f.Source))
}

// health is what /healthz reports: failing once a part the agent cannot do
// without has stopped, so that the liveness probe restarts the pod.
type health struct {
	mu     sync.Mutex
	failed map[string]error
	// down lists checks that have not stayed running for too long.
	down func() []string
}

func newHealth(down func() []string) *health { return &health{failed: map[string]error{}, down: down} }

func (h *health) fail(part string, err error) {
	h.mu.Lock()
	h.failed[part] = err
	h.mu.Unlock()
}

func (h *health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	down := h.down()
	if len(h.failed) > 0 || len(down) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for part, err := range h.failed {
			fmt.Fprintf(w, "%s: %v\n", part, err)
		}
		for _, d := range down {
			fmt.Fprintf(w, "check %s\n", d)
		}
		return
	}
	fmt.Fprintln(w, "ok")
}

func handler(reg *prometheus.Registry, h *health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/healthz", h)
	return mux
}

// BootTime reads when the node booted; zero if it cannot be read, which
// keeps every condition found in the API server.
func BootTime(procPath string) time.Time {
	fs, err := procfs.NewFS(procPath)
	if err != nil {
		return time.Time{}
	}
	st, err := fs.Stat()
	if err != nil {
		return time.Time{}
	}
	return time.Unix(int64(st.BootTime), 0)
}
