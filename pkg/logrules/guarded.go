package logrules

import (
	"context"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// Guarded lets a source's callback and a ticker share an engine: lines go in
// from the source, quiet-period expiry from the ticker.
type Guarded struct {
	mu  sync.Mutex
	e   *Engine
	buf []checks.Finding
}

// NewGuarded wraps e.
func NewGuarded(e *Engine) *Guarded { return &Guarded{e: e} }

// Feed runs the rules over l and hands each finding, stamped with source, to
// emit.
func (g *Guarded) Feed(l Line, source string, emit func(checks.Finding)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf = g.e.Feed(l, g.buf[:0])
	for _, f := range g.buf {
		f.Source = source
		emit(f)
	}
}

// ExpireEvery runs the engine's expiry every interval until ctx ends or stop
// is called; stop waits for a run in progress.
func (g *Guarded) ExpireEvery(ctx context.Context, interval time.Duration, now func() time.Time, emit func(checks.Finding)) (stop func()) {
	return checks.Every(ctx, interval, func(time.Time) {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, f := range g.e.Expire(now(), nil) {
			emit(f)
		}
	})
}
