package reporter

import (
	"regexp"
	"sync"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/prometheus/client_golang/prometheus"
)

// MetricsSink exports findings as Prometheus metrics: a counter per event
// reason and, per condition type, a gauge per status that is 1 for the
// current status (the shape kube-state-metrics gives node conditions).
type MetricsSink struct {
	events     *prometheus.CounterVec
	conditions *prometheus.GaugeVec
	diskErrors *prometheus.CounterVec

	mu sync.Mutex
	// reported holds the condition types a finding has set, which a state
	// adopted from the Node must not overwrite.
	reported map[string]bool
}

// diskReasons are the events about a disk, counted per device too.
var diskReasons = map[string]bool{"IOError": true, "Ext4Error": true, "Ext4Warning": true, "XFSError": true, "NVMeTimeout": true}

// deviceInMessage finds the device a kernel disk error names: "dev sdb,",
// "(device xvdf)", "EXT4-fs (xvdf)", "XFS (dm-0)", "nvme nvme0:".
var deviceInMessage = regexp.MustCompile(`(?:\bdev(?:ice)? |EXT4-fs \(|XFS \(|nvme )([a-zA-Z][\w.-]*)`)

// DiskDevice returns the device a disk error event names, or "unknown".
func DiskDevice(message string) string {
	if m := deviceInMessage.FindStringSubmatch(message); m != nil {
		return m[1]
	}
	return "unknown"
}

// NewMetricsSink registers the finding metrics on reg and sets each owned
// condition to its healthy default until a check says otherwise.
func NewMetricsSink(reg prometheus.Registerer, owned []finding.ConditionDefault) *MetricsSink {
	m := &MetricsSink{
		reported: map[string]bool{},
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_events_total",
			Help: "Events found on this node, by reason.",
		}, []string{"reason"}),
		conditions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodeguard_condition",
			Help: "1 for the status each nodeguard condition type has now, 0 for the others.",
		}, []string{"condition", "status"}),
	}
	m.diskErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodeguard_disk_errors_total",
		Help: "Kernel disk error events by device and reason (IOError, Ext4Error, Ext4Warning, XFSError, NVMeTimeout).",
	}, []string{"device", "reason"})
	reg.MustRegister(m.events, m.conditions, m.diskErrors)
	for _, d := range owned {
		m.setStatus(d.Type, finding.StatusFalse)
	}
	return m
}

func (m *MetricsSink) Finding(f finding.Finding) {
	switch f.Kind {
	case finding.KindEvent:
		m.events.WithLabelValues(f.Reason).Inc()
		if diskReasons[f.Reason] {
			m.diskErrors.WithLabelValues(DiskDevice(f.Message), f.Reason).Inc()
		}
	case finding.KindCondition:
		m.mu.Lock()
		m.reported[f.Type] = true
		m.setStatus(f.Type, f.Status)
		m.mu.Unlock()
	}
}

// Adopt shows a condition's status as the agent found it on the Node at
// start, unless a finding has set it already. Without it, a condition kept
// True across an agent restart would read False here while the Node says
// True, and alerts on the metric would resolve with the problem still
// there.
func (m *MetricsSink) Adopt(condType string, status finding.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.reported[condType] {
		m.setStatus(condType, status)
	}
}

func (m *MetricsSink) setStatus(condType string, status finding.Status) {
	for _, s := range []finding.Status{finding.StatusTrue, finding.StatusFalse, finding.StatusUnknown} {
		v := 0.0
		if s == status {
			v = 1
		}
		m.conditions.WithLabelValues(condType, string(s)).Set(v)
	}
}
