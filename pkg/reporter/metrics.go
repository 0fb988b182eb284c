package reporter

import (
	"regexp"

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

// NewMetricsSink registers the finding metrics on reg. The condition
// gauges appear when the reporter starts, with the state it starts from: a
// condition kept True across an agent restart reads True here as on the
// Node, so that alerts on the metric do not resolve with the problem still
// there.
func NewMetricsSink(reg prometheus.Registerer) *MetricsSink {
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
	m.diskErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodeguard_disk_errors_total",
		Help: "Kernel disk error events by device and reason (IOError, Ext4Error, Ext4Warning, XFSError, NVMeTimeout).",
	}, []string{"device", "reason"})
	reg.MustRegister(m.events, m.conditions, m.diskErrors)
	return m
}

// Start shows every owned condition's starting state.
func (m *MetricsSink) Start(state State) {
	for _, c := range state.Conditions() {
		m.setStatus(c.Type, c.Status)
	}
}

// Event counts an event, and a disk error by its device too: as many as it
// stands for, so that a storm's summary counts every line of the storm.
func (m *MetricsSink) Event(f finding.Finding) {
	n := float64(max(f.Count, 1))
	m.events.WithLabelValues(f.Reason).Add(n)
	if diskReasons[f.Reason] {
		m.diskErrors.WithLabelValues(DiskDevice(f.Message), f.Reason).Add(n)
	}
}

// Changed shows a condition's new status.
func (m *MetricsSink) Changed(c Condition) { m.setStatus(c.Type, c.Status) }

func (m *MetricsSink) setStatus(condType string, status finding.Status) {
	for _, s := range []finding.Status{finding.StatusTrue, finding.StatusFalse, finding.StatusUnknown} {
		v := 0.0
		if s == status {
			v = 1
		}
		m.conditions.WithLabelValues(condType, string(s)).Set(v)
	}
}
