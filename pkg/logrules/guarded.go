package logrules

import (
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Guarded lets a source's callback and a ticker share an engine: lines go in
// from the source, quiet-period expiry from the ticker. It also ends a
// report that has gone quiet for ReportQuiet, so that a live report's
// findings (a hung task's, whose report has no end marker) go out then,
// not at the next tick.
type Guarded struct {
	mu  sync.Mutex
	e   *Engine
	buf []finding.Finding
	// late receives what a report that ended by going quiet made; nil
	// leaves such a report to ExpireTo or Flush.
	late    func(finding.Finding)
	quiet   *time.Timer
	stopped bool
}

// NewGuarded wraps e. late, when set, is handed the findings of reports
// that end by going quiet; it is called from a timer's goroutine.
func NewGuarded(e *Engine, late func(finding.Finding)) *Guarded { return &Guarded{e: e, late: late} }

// Feed runs the rules over l, its source named source, and hands each
// finding to emit.
func (g *Guarded) Feed(l Line, source string, emit func(finding.Finding)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	l.Source = source
	g.buf = g.e.Feed(l, g.buf[:0])
	for _, f := range g.buf {
		emit(f)
	}
	if g.e.InReport() && g.late != nil && !g.stopped {
		// Every line pushes the end back: a report's lines come together.
		if g.quiet == nil {
			g.quiet = time.AfterFunc(ReportQuiet, g.endQuiet)
		} else {
			g.quiet.Reset(ReportQuiet)
		}
	}
}

// Holding reports whether a report's findings are held: a source that saves
// its place must not save one past the report's first line until they
// are out, or a restart would lose them.
func (g *Guarded) Holding() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.e.InReport()
}

func (g *Guarded) endQuiet() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	for _, f := range g.e.Flush(nil) {
		g.late(f)
	}
}

// ExpireTo runs the engine's expiry at now and hands what it clears or
// ends to emit, serialised with Feed. The caller owns the ticker
// (checks.WhileBusy).
func (g *Guarded) ExpireTo(now time.Time, emit func(finding.Finding)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.e.Expire(now, nil) {
		emit(f)
	}
}

// Pending reports whether ExpireTo has anything left to do (Engine.Pending).
func (g *Guarded) Pending() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.e.Pending()
}

// Stop ends the open report, handing its findings to emit, and the timer:
// for a source that stops, so that a report it was reading is not lost.
func (g *Guarded) Stop(emit func(finding.Finding)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if g.quiet != nil {
		g.quiet.Stop()
	}
	for _, f := range g.e.Flush(nil) {
		emit(f)
	}
}
