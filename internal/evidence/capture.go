package evidence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// Reason is the reason of the event that names a captured directory.
const Reason = "EvidenceCaptured"

// Options are what the capturer captures, and where.
type Options struct {
	// Dir holds one directory per capture (stateDir/evidence).
	Dir string
	// Conditions are the types whose turning True captures.
	Conditions []string
	// Window is how far back the log lines go.
	Window time.Duration
	// MaxDirBytes caps one directory's files, MaxTotalBytes all of them.
	MaxDirBytes, MaxTotalBytes int64
	TopProcesses               int
	// Timeout bounds one capture; QueueSize the transitions waiting.
	Timeout   time.Duration
	QueueSize int
	// ProcPath is the host's /proc.
	ProcPath string
	Recent   *Recent
	Log      *zap.Logger
	Metrics  prometheus.Registerer
	Now      func() time.Time
}

// Wanted lists the types of owned that capture by default: every one not
// marked noisy in its ConditionDefault, or, when named is not empty, those
// of named (a type no check owns is left out, and returned as unknown).
func Wanted(owned []finding.ConditionDefault, named []string) (types, unknown []string) {
	if len(named) == 0 {
		for _, d := range owned {
			if !d.Noisy {
				types = append(types, d.Type)
			}
		}
		return types, nil
	}
	for _, n := range named {
		if slices.ContainsFunc(owned, func(d finding.ConditionDefault) bool { return d.Type == n }) {
			types = append(types, n)
		} else {
			unknown = append(unknown, n)
		}
	}
	return types, unknown
}

// Capturer is a sink of the reporter: when a wanted condition turns True
// it queues a capture, which its own goroutine (Run) writes, so that
// neither the reporter nor a check ever waits on the disk. A capture that
// cannot be queued, fails to write (a full disk) or outlasts its deadline
// is skipped and counted.
type Capturer struct {
	opts  Options
	queue chan capture
	// captured is, per type, the Since of the last transition queued:
	// Changed is told of every change while a condition stays True (a new
	// message), and only a new Since is a new transition. Only the
	// reporter's calls, one at a time, touch it.
	captured map[string]time.Time

	capturedTotal prometheus.Counter
	skipped       *prometheus.CounterVec
	// writeFile writes one file of a capture; tests make it fail.
	writeFile func(path string, data []byte) error
}

type capture struct {
	cond reporter.Condition
	at   time.Time
}

// Why a capture was skipped, as the metric labels it.
const (
	SkipQueueFull = "queue_full"
	SkipWrite     = "write_error"
	SkipTimeout   = "timeout"
)

// New returns a capturer; Run makes it capture.
func New(opts Options) *Capturer {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = prometheus.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProcPath == "" {
		opts.ProcPath = "/proc"
	}
	c := &Capturer{
		opts: opts, queue: make(chan capture, max(opts.QueueSize, 1)), captured: map[string]time.Time{},
		capturedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodeguard_evidence_captured_total",
			Help: "Evidence directories written when a condition turned True.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeguard_evidence_skipped_total",
			Help: "Evidence captures skipped, by why: queue_full, write_error (a full disk), timeout.",
		}, []string{"why"}),
		writeFile: func(path string, data []byte) error { return os.WriteFile(path, data, 0o600) },
	}
	for _, why := range []string{SkipQueueFull, SkipWrite, SkipTimeout} {
		c.skipped.WithLabelValues(why)
	}
	opts.Metrics.MustRegister(c.capturedTotal, c.skipped)
	return c
}

// Start takes the state the reporter starts from: a condition already True
// (kept from the Node across a restart) turned True before this agent, and
// was captured then if at all.
func (c *Capturer) Start(state reporter.State) {
	for _, cond := range state.Conditions() {
		if cond.Status == finding.StatusTrue {
			c.captured[cond.Type] = cond.Since
		}
	}
}

// Event is not for the capturer.
func (c *Capturer) Event(finding.Finding) {}

// Changed queues a capture when a wanted condition has turned True.
func (c *Capturer) Changed(cond reporter.Condition) {
	if cond.Status != finding.StatusTrue || !slices.Contains(c.opts.Conditions, cond.Type) {
		return
	}
	if last, ok := c.captured[cond.Type]; ok && last.Equal(cond.Since) {
		return
	}
	c.captured[cond.Type] = cond.Since
	select {
	case c.queue <- capture{cond: cond, at: c.opts.Now()}:
	default:
		c.skip(cond, SkipQueueFull, errors.New("the capture queue is full"))
	}
}

func (c *Capturer) skip(cond reporter.Condition, why string, err error) {
	c.skipped.WithLabelValues(why).Inc()
	c.opts.Log.Warn("evidence not captured", zap.String("condition", cond.Type), zap.String("why", why), zap.Error(err))
}

// Run captures what Changed queues until ctx ends, and reports each
// directory written through emit, as an EvidenceCaptured event. One capture
// at a time: a write stuck in the kernel (the disk under stateDir hangs)
// holds this goroutine alone, and what comes meanwhile fills the queue and
// is skipped rather than stacked.
func (c *Capturer) Run(ctx context.Context, emit func(finding.Finding)) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-c.queue:
			cctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
			start := time.Now()
			path, err := c.capture(cctx, job)
			cancel()
			switch {
			case err == nil:
				c.capturedTotal.Inc()
				c.opts.Log.Info("evidence captured", zap.String("condition", job.cond.Type), zap.String("path", path),
					zap.Duration("took", time.Since(start)))
				f := finding.Event(finding.SeverityInfo, Reason, fmt.Sprintf("evidence of %s=True (%s) captured in %s",
					job.cond.Type, job.cond.Reason, path))
				f.Check, f.Source, f.Time = "evidence", path, c.opts.Now()
				emit(f)
			case ctx.Err() != nil:
				return
			case errors.Is(err, context.DeadlineExceeded):
				c.skip(job.cond, SkipTimeout, err)
			default:
				c.skip(job.cond, SkipWrite, err)
			}
		}
	}
}

// capture writes one directory: into a hidden one first, renamed into
// place once whole, so that a failed capture leaves nothing a reader (or
// the bundle) would take for evidence.
func (c *Capturer) capture(ctx context.Context, job capture) (string, error) {
	if err := os.MkdirAll(c.opts.Dir, 0o700); err != nil {
		return "", fmt.Errorf("making %s: %w", c.opts.Dir, err)
	}
	if err := c.prune(); err != nil {
		return "", err
	}
	// Named for when the condition turned True, which sorts them too.
	when := job.cond.Since
	if when.IsZero() {
		when = job.at
	}
	name := when.UTC().Format("20060102T150405.000Z") + "-" + job.cond.Type
	final := filepath.Join(c.opts.Dir, name)
	for i := 2; exists(final); i++ {
		final = filepath.Join(c.opts.Dir, fmt.Sprintf("%s-%d", name, i))
	}
	tmp := filepath.Join(c.opts.Dir, "."+filepath.Base(final)+".tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("making %s: %w", tmp, err)
	}
	if err := c.write(ctx, tmp, job); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("renaming %s into place: %w", tmp, err)
	}
	return final, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// write writes the files of one capture, each cut to a share of what the
// directory's cap has left, in the order of Files.
func (c *Capturer) write(ctx context.Context, dir string, job capture) error {
	left := c.opts.MaxDirBytes
	for i, f := range c.files(job) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("capturing %s: %w", f.name, err)
		}
		limit := left / 4
		switch {
		case i == len(Files)-1:
			limit = left
		case f.name == "kernel.log":
			limit = left / 2
		}
		data := fit(f.data(), limit, f.keepTail)
		if err := c.writeFile(filepath.Join(dir, f.name), data); err != nil {
			return fmt.Errorf("writing %s: %w", f.name, err)
		}
		left -= int64(len(data))
	}
	return nil
}

// prune removes the oldest directories until one more of the largest size
// fits under the total cap, and what failed captures left behind.
func (c *Capturer) prune() error {
	dirs, err := List(c.opts.Dir)
	if err != nil {
		return err
	}
	entries, _ := os.ReadDir(c.opts.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".tmp") {
			os.RemoveAll(filepath.Join(c.opts.Dir, e.Name()))
		}
	}
	var total int64
	for _, d := range dirs {
		total += d.Bytes
	}
	for len(dirs) > 0 && total+c.opts.MaxDirBytes > c.opts.MaxTotalBytes {
		if err := os.RemoveAll(dirs[0].Path); err != nil {
			return fmt.Errorf("removing the oldest evidence, %s: %w", dirs[0].Path, err)
		}
		total -= dirs[0].Bytes
		dirs = dirs[1:]
	}
	return nil
}

// Dir is one captured directory.
type Dir struct {
	Path  string
	Bytes int64 // its files' sizes together
}

// List returns the captured directories under dir, oldest first (their
// names start with the capture's time); none when dir does not exist.
func List(dir string) ([]Dir, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the evidence in %s: %w", dir, err)
	}
	var out []Dir
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		d := Dir{Path: filepath.Join(dir, e.Name())}
		files, _ := os.ReadDir(d.Path)
		for _, f := range files {
			if info, err := f.Info(); err == nil && info.Mode().IsRegular() {
				d.Bytes += info.Size()
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// cutMark says where a file was cut, and why.
const cutMark = "[nodeguard: %d bytes cut here to keep the directory within evidence.maxDirBytes]\n"

// fit cuts data to limit bytes, marking the cut: keeping the start, or for
// a log its newest lines, the end.
func fit(data []byte, limit int64, keepTail bool) []byte {
	if int64(len(data)) <= limit {
		return data
	}
	if limit <= 0 {
		return nil
	}
	// The mark's length with the most it could say; what it says is less.
	room := limit - int64(len(fmt.Sprintf(cutMark, len(data)))) - 1
	if room <= 0 {
		return []byte(fmt.Sprintf(cutMark, len(data)))[:limit]
	}
	if keepTail {
		tail := data[int64(len(data))-room:]
		if i := bytes.IndexByte(tail, '\n'); i >= 0 {
			tail = tail[i+1:] // from a whole line
		}
		return append([]byte(fmt.Sprintf(cutMark, len(data)-len(tail))), tail...)
	}
	return append(append(data[:room:room], '\n'), fmt.Sprintf(cutMark, int64(len(data))-room)...)
}
