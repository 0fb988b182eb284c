package kmsg

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/euank/go-kmsg-parser/v3/kmsgparser"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Record is one kernel log record as the check sees it.
type Record struct {
	Seq      uint64
	Priority int // 0 (emerg) to 7 (debug), without the facility
	Message  string
	// Received is when the agent read the record. The kernel's own stamp is
	// time since boot, which go-kmsg-parser turns into wall time only to the
	// second; receive time is what a reader of the event needs.
	Received time.Time
}

// Source delivers kernel log records until ctx ends, starting after the
// record with sequence number after (-1: from the oldest record kept).
type Source interface {
	Run(ctx context.Context, after int, out chan<- Record) error
}

// sourceMetrics count what the kernel or the parser made us skip.
type sourceMetrics struct {
	overruns  prometheus.Counter
	malformed prometheus.Counter
	records   prometheus.Counter
}

func newSourceMetrics(reg prometheus.Registerer) *sourceMetrics {
	m := &sourceMetrics{
		overruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodeguard_kmsg_overruns_total",
			Help: "Times the kernel log ring buffer wrapped before the agent read it (EPIPE on /dev/kmsg): records were lost.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodeguard_kmsg_malformed_records_total",
			Help: "Kernel log records that could not be parsed and were skipped.",
		}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodeguard_kmsg_records_total",
			Help: "Kernel log records read from /dev/kmsg.",
		}),
	}
	reg.MustRegister(m.overruns, m.malformed, m.records)
	return m
}

// devKmsg reads /dev/kmsg through go-kmsg-parser.
type devKmsg struct {
	log     *zap.Logger
	metrics *sourceMetrics
	// startAtEnd skips the records already in the ring buffer, unless there
	// is a position to resume from.
	startAtEnd bool
	now        func() time.Time
}

// parserLogger receives go-kmsg-parser's warnings. The only one it gives is
// for EPIPE, the ring buffer overrunning the reader, which it skips and
// carries on from; nodeguard counts it.
type parserLogger struct {
	log      *zap.Logger
	overruns prometheus.Counter
}

func (l parserLogger) Infof(f string, a ...any) { l.log.Sugar().Infof(f, a...) }
func (l parserLogger) Errorf(f string, a ...any) {
	l.log.Sugar().Errorf(f, a...)
}
func (l parserLogger) Warningf(f string, a ...any) {
	if strings.Contains(f, "short read") {
		l.overruns.Inc()
	}
	l.log.Sugar().Warnf(f, a...)
}

func (d *devKmsg) Run(ctx context.Context, after int, out chan<- Record) error {
	lastSeq := after
	seekEnd := d.startAtEnd && after < 0
	for {
		err := d.readOnce(ctx, out, seekEnd, &lastSeq)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errMalformed) {
			return err
		}
		// go-kmsg-parser stops at a record it cannot parse. Count it and
		// start again, skipping what was delivered; if that meets the same
		// record again, jump to the end rather than loop.
		d.metrics.malformed.Inc()
		d.log.Warn("skipped a malformed kernel log record", zap.Error(err), zap.Int("after_seq", lastSeq))
		seekEnd = lastSeq < 0 || errors.Is(err, errMalformedAgain)
	}
}

// backlogAge is how old a record must be, by the kernel's stamp, to be taken
// as backlog rather than as just logged.
const backlogAge = 10 * time.Second

// kmsgFrom says where a read of /dev/kmsg starts, for the log.
func kmsgFrom(seekEnd bool, after int) string {
	switch {
	case seekEnd:
		return "the end"
	case after >= 0:
		return "after record " + strconv.Itoa(after)
	default:
		return "the oldest record kept"
	}
}

var (
	errMalformed      = errors.New("malformed kmsg record")
	errMalformedAgain = fmt.Errorf("%w, again at the same place", errMalformed)
)

func (d *devKmsg) readOnce(ctx context.Context, out chan<- Record, seekEnd bool, lastSeq *int) error {
	parser, err := kmsgparser.NewParser(kmsgparser.WithLogger(parserLogger{log: d.log, overruns: d.metrics.overruns}))
	if err != nil {
		return fmt.Errorf("opening /dev/kmsg: %w", err)
	}
	if seekEnd {
		if err := parser.SeekEnd(); err != nil {
			parser.Close()
			return fmt.Errorf("seeking to the end of /dev/kmsg: %w", err)
		}
	}
	// Said at info level because whoever writes a record to test the agent
	// needs to know when it will be read. Said again on each reopen after
	// a malformed record, with where reading starts, which is rare and
	// worth seeing.
	d.log.Info("reading the kernel log", zap.String("source", "/dev/kmsg"), zap.String("from", kmsgFrom(seekEnd, *lastSeq)))
	msgs := make(chan kmsgparser.Message, 256)
	parseErr := make(chan error, 1)
	go func() { parseErr <- parser.Parse(msgs) }()
	// Close unblocks the parser's read; it then closes msgs.
	stop := context.AfterFunc(ctx, func() { parser.Close() })
	defer stop()
	startSeq := *lastSeq
	for m := range msgs {
		if m.SequenceNumber <= startSeq {
			continue
		}
		*lastSeq = m.SequenceNumber
		d.metrics.records.Inc()
		text, _, _ := strings.Cut(m.Message, "\n")
		received := d.now()
		// A record from the backlog happened when the kernel says, not now;
		// the parser's stamp is good to the second, enough for that.
		if received.Sub(m.Timestamp) > backlogAge {
			received = m.Timestamp
		}
		rec := Record{Seq: uint64(m.SequenceNumber), Priority: m.Priority & 7, Message: text, Received: received}
		select {
		case out <- rec:
		case <-ctx.Done():
			parser.Close()
			for range msgs {
			}
			return nil
		}
	}
	parser.Close()
	err = <-parseErr
	if err != nil && strings.Contains(err.Error(), "malformed") {
		if *lastSeq == startSeq {
			return fmt.Errorf("%w: %v", errMalformedAgain, err)
		}
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	if err != nil {
		return fmt.Errorf("reading /dev/kmsg: %w", err)
	}
	if ctx.Err() == nil {
		return fmt.Errorf("reading /dev/kmsg: the parser stopped without an error")
	}
	return nil
}
