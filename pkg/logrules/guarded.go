package logrules

import (
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// Guarded lets a source's callback and a ticker share an engine: lines go in
// from the source, quiet-period expiry from the ticker.
type Guarded struct {
	mu  sync.Mutex
	e   *Engine
	buf []finding.Finding
}

// NewGuarded wraps e.
func NewGuarded(e *Engine) *Guarded { return &Guarded{e: e} }

// Feed runs the rules over l and hands each finding, stamped with source, to
// emit.
func (g *Guarded) Feed(l Line, source string, emit func(finding.Finding)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf = g.e.Feed(l, g.buf[:0])
	for _, f := range g.buf {
		f.Source = source
		emit(f)
	}
}

// ExpireTo runs the engine's expiry at now and hands what it clears to
// emit, serialised with Feed. The caller owns the ticker (checks.Every).
func (g *Guarded) ExpireTo(now time.Time, emit func(finding.Finding)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.e.Expire(now, nil) {
		emit(f)
	}
}
