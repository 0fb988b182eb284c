package reporter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// MetricsSink exports findings as Prometheus metrics: a counter per event
// reason and, per condition type, a gauge per status that is 1 for the
// current status (the shape kube-state-metrics gives node conditions).
type MetricsSink struct {
	events     *prometheus.CounterVec
	conditions *prometheus.GaugeVec
}

// NewMetricsSink registers the finding metrics on reg and sets each owned
// condition to its healthy default until a check says otherwise.
func NewMetricsSink(reg prometheus.Registerer, owned []checks.ConditionDefault) *MetricsSink {
	m := &MetricsSink{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_total",
			Help: "Events found on this node, by reason.",
		}, []string{"reason"}),
		conditions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodeguard_condition",
			Help: "1 for the status each nodeguard condition type has now, 0 for the others.",
		}, []string{"condition", "status"}),
	}
	reg.MustRegister(m.events, m.conditions)
	for _, d := range owned {
		m.setStatus(d.Type, checks.StatusFalse)
	}
	return m
}

func (m *MetricsSink) Finding(f checks.Finding) {
	switch f.Kind {
	case checks.KindEvent:
		m.events.WithLabelValues(f.Reason).Inc()
	case checks.KindCondition:
		m.setStatus(f.Type, f.Status)
	}
}

func (m *MetricsSink) setStatus(condType string, status checks.Status) {
	for _, s := range []checks.Status{checks.StatusTrue, checks.StatusFalse, checks.StatusUnknown} {
		v := 0.0
		if s == status {
			v = 1
		}
		m.conditions.WithLabelValues(condType, string(s)).Set(v)
	}
}
