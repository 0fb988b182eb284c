package logsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/euank/go-kmsg-parser/v3/kmsgparser"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Kmsg reads the kernel's log from /dev/kmsg through go-kmsg-parser. Its
// cursor is the boot's ID and the last record's sequence number, which
// starts over with each boot: a cursor from another boot is no cursor.
type Kmsg struct {
	Log     *zap.Logger
	Metrics *KmsgMetrics
	// ProcPath is the host's /proc, for the boot ID; empty is /proc.
	ProcPath string
	// StartAtEnd skips the records already in the ring buffer, unless there
	// is a cursor of this boot to resume after.
	StartAtEnd bool
	// BacklogLookback: without a cursor of this boot, records older than
	// this are read but not emitted, so that an agent installed on a node
	// up for weeks does not replay weeks of problems. Zero emits them all.
	BacklogLookback time.Duration
	Now             func() time.Time

	// newParser opens /dev/kmsg; tests replace it.
	newParser func(kmsgparser.Logger) (kmsgparser.Parser, error)
}

// KmsgMetrics count what the kernel or the parser made the agent skip.
type KmsgMetrics struct {
	overruns  prometheus.Counter
	malformed prometheus.Counter
	records   prometheus.Counter
}

// NewKmsgMetrics registers the /dev/kmsg counters with reg.
func NewKmsgMetrics(reg prometheus.Registerer) *KmsgMetrics {
	m := &KmsgMetrics{
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

// kmsgCursor is the cursor's form, which is also the form of the position
// file (kmsg-position.json) older agents kept: an upgrade resumes.
type kmsgCursor struct {
	BootID  string `json:"bootID"`
	LastSeq int    `json:"lastSeq"`
}

// parserLogger receives go-kmsg-parser's warnings. The only one it gives is
// for EPIPE, the ring buffer overrunning the reader, which it skips and
// carries on from; nodeguard counts it.
type parserLogger struct {
	log      *zap.Logger
	overruns prometheus.Counter
}

func (l parserLogger) Infof(f string, a ...any)  { l.log.Sugar().Infof(f, a...) }
func (l parserLogger) Errorf(f string, a ...any) { l.log.Sugar().Errorf(f, a...) }
func (l parserLogger) Warningf(f string, a ...any) {
	if strings.Contains(f, "short read") {
		l.overruns.Inc()
	}
	l.log.Sugar().Warnf(f, a...)
}

// Run emits the kernel's records after the cursor after until ctx ends.
func (k *Kmsg) Run(ctx context.Context, after string, emit func(Line)) error {
	now := k.Now
	if now == nil {
		now = time.Now
	}
	bootID, lastSeq := k.resumeAt(after)
	r := kmsgRead{k: k, now: now, lastSeq: lastSeq, emit: emit}
	if bootID != "" {
		// Every record's cursor shares the boot; only the number is new.
		b, _ := json.Marshal(bootID)
		r.cursorPrefix = `{"bootID":` + string(b) + `,"lastSeq":`
	}
	if lastSeq < 0 && k.BacklogLookback > 0 {
		r.cutoff = now().Add(-k.BacklogLookback)
	}
	seekEnd := k.StartAtEnd && lastSeq < 0
	for {
		err := r.once(ctx, seekEnd)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errMalformed) {
			return err
		}
		// go-kmsg-parser stops at a record it cannot parse. Count it and
		// start again, skipping what was delivered; if that meets the same
		// record again, jump to the end rather than loop.
		k.Metrics.malformed.Inc()
		k.Log.Warn("skipped a malformed kernel log record", zap.Error(err), zap.Int("after_seq", r.lastSeq))
		seekEnd = r.lastSeq < 0 || errors.Is(err, errMalformedAgain)
	}
}

// resumeAt returns this boot's ID ("" when it cannot be told, and then no
// record gets a cursor) and the sequence number to resume after (-1: none).
func (k *Kmsg) resumeAt(after string) (string, int) {
	proc := k.ProcPath
	if proc == "" {
		proc = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(proc, "sys/kernel/random/boot_id"))
	if err != nil {
		k.Log.Warn("cannot tell this boot from the last; kernel log records may be reported again after a restart", zap.Error(err))
		return "", -1
	}
	bootID := strings.TrimSpace(string(b))
	if after == "" {
		return bootID, -1
	}
	var c kmsgCursor
	if err := json.Unmarshal([]byte(after), &c); err != nil {
		k.Log.Warn("starting from the oldest kernel log record", zap.Error(fmt.Errorf("reading the kmsg cursor %q: %w", after, err)))
		return bootID, -1
	}
	if c.BootID != bootID {
		return bootID, -1
	}
	return bootID, c.LastSeq
}

// backlogAge is how old a record must be, by the kernel's stamp, to be taken
// as backlog rather than as just logged.
const backlogAge = 10 * time.Second

var (
	errMalformed      = errors.New("malformed kmsg record")
	errMalformedAgain = fmt.Errorf("%w, again at the same place", errMalformed)
)

// kmsgRead is one Run's reading, across the reopens after malformed
// records.
type kmsgRead struct {
	k            *Kmsg
	now          func() time.Time
	emit         func(Line)
	lastSeq      int
	cutoff       time.Time
	cursorPrefix string
}

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

func (r *kmsgRead) once(ctx context.Context, seekEnd bool) error {
	open := r.k.newParser
	if open == nil {
		open = func(l kmsgparser.Logger) (kmsgparser.Parser, error) {
			return kmsgparser.NewParser(kmsgparser.WithLogger(l))
		}
	}
	parser, err := open(parserLogger{log: r.k.Log, overruns: r.k.Metrics.overruns})
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
	r.k.Log.Info("reading the kernel log", zap.String("source", "/dev/kmsg"), zap.String("from", kmsgFrom(seekEnd, r.lastSeq)))
	msgs := make(chan kmsgparser.Message, 256)
	parseErr := make(chan error, 1)
	go func() { parseErr <- parser.Parse(msgs) }()
	// Close unblocks the parser's read; it then closes msgs.
	stop := context.AfterFunc(ctx, func() { parser.Close() })
	defer stop()
	startSeq := r.lastSeq
	for m := range msgs {
		if m.SequenceNumber <= startSeq {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		r.lastSeq = m.SequenceNumber
		r.k.Metrics.records.Inc()
		received := r.now()
		// A record from the backlog happened when the kernel says, not now;
		// the parser's stamp is good to the second, enough for that.
		if received.Sub(m.Timestamp) > backlogAge {
			received = m.Timestamp
		}
		if received.Before(r.cutoff) {
			continue
		}
		text, _, _ := strings.Cut(m.Message, "\n")
		seq := strconv.Itoa(m.SequenceNumber)
		l := Line{Text: text, Time: received, Where: "kmsg seq " + seq}
		if r.cursorPrefix != "" {
			l.Cursor = r.cursorPrefix + seq + "}"
		}
		r.emit(l)
	}
	parser.Close()
	for range msgs {
	}
	err = <-parseErr
	if ctx.Err() != nil {
		return nil
	}
	if err != nil && strings.Contains(err.Error(), "malformed") {
		if r.lastSeq == startSeq {
			return fmt.Errorf("%w: %v", errMalformedAgain, err)
		}
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	if err != nil {
		return fmt.Errorf("reading /dev/kmsg: %w", err)
	}
	return errors.New("reading /dev/kmsg: the parser stopped without an error")
}
