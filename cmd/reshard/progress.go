package main

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/mover"
)

// progressBars draw, on a terminal, each migration's progress: a line when each of its
// phases starts (copy, catch-up, cutover, cleanup), a bar of the copy (bytes against the
// estimate, with rate and ETA) that ends at 100% on its own line, then the catch-up's lag.
// It is a migrate.Observer (the phases come from the journal) and gives each migration's
// mover its progress callback (forID). nil draws nothing.
type progressBars struct {
	w    io.Writer
	mu   sync.Mutex
	bars map[string]*progress
}

// newProgressBars draws on w if it is a terminal and the logs are not JSON (a program
// reads those: no bar between their lines); otherwise it is nil.
func newProgressBars(w io.Writer) *progressBars {
	if !isTerminal(w) || logs.json {
		return nil
	}
	return drawProgress(w)
}

// drawProgress draws on w whatever it is (the tests render into a buffer).
func drawProgress(w io.Writer) *progressBars {
	return &progressBars{w: w, bars: map[string]*progress{}}
}

func (b *progressBars) get(id string) *progress {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.bars[id]
	if !ok {
		p = &progress{w: b.w, id: id}
		b.bars[id] = p
	}
	return p
}

// forID is the progress callback of migration id's mover (the same however often its
// mover is built: a retried cutover, the cleanup); nil on a nil progressBars.
func (b *progressBars) forID(id string) func(mover.Progress) {
	if b == nil {
		return nil
	}
	return b.get(id).update
}

// Migration, CutOver and Failed make progressBars a migrate.Observer.
func (b *progressBars) Migration(m *catalog.Migration) {
	if b != nil {
		b.get(m.ID).enter(m.Phase)
	}
}
func (b *progressBars) CutOver(*catalog.Migration) {}
func (b *progressBars) Failed(*catalog.Migration)  {}

// finishID ends migration id's bar: at 100%, with its line ended, before its result.
func (b *progressBars) finishID(id string) {
	if b != nil {
		b.get(id).finish()
	}
}

// finish ends every bar, before a command prints its summary.
func (b *progressBars) finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	ps := make([]*progress, 0, len(b.bars))
	for _, p := range b.bars {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	for _, p := range ps {
		p.finish()
	}
}

// shownPhases are the phases that get a start line, by the journal phase that starts them.
var shownPhases = []struct{ phase, name string }{
	{catalog.PhaseCopying, "copy"}, {catalog.PhaseCatchingUp, "catch-up"},
	{catalog.PhaseFrozen, "cutover"}, {catalog.PhaseCleaningUp, "cleanup"},
}

// progress is one migration's.
type progress struct {
	w     io.Writer
	id    string
	mu    sync.Mutex
	shown int // index in shownPhases of the last phase announced; -1: none
	bar   *progressbar.ProgressBar
	copy  bool // bar is the copy's
	init  bool
}

// enter announces phase if it starts a phase after the last one announced (a retried
// cutover goes back to catching up: it is not announced again).
func (p *progress) enter(phase string) {
	i := slices.IndexFunc(shownPhases, func(s struct{ phase, name string }) bool { return s.phase == phase })
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.init {
		p.shown, p.init = -1, true
	}
	if i <= p.shown {
		return
	}
	p.endBar()
	p.shown = i
	fmt.Fprintf(p.w, "%s: %s started\n", p.id, shownPhases[i].name)
}

func (p *progress) update(pr mover.Progress) {
	p.enter(pr.Phase)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch pr.Phase {
	case catalog.PhaseCopying:
		if p.bar == nil {
			p.bar, p.copy = p.newBar(pr.BytesTotal), true
		}
		if pr.BytesTotal > pr.BytesCopied {
			p.bar.ChangeMax64(pr.BytesTotal)
		}
		p.bar.Describe(fmt.Sprintf("%s copy %d/%d chunks, %d rows", p.id, pr.ChunksDone, pr.ChunksTotal, pr.RowsCopied))
		_ = p.bar.Set64(pr.BytesCopied)
	case catalog.PhaseCatchingUp:
		if p.bar == nil {
			p.bar, p.copy = p.newBar(-1), false
		}
		p.bar.Describe(fmt.Sprintf("%s catch-up: %d txs applied, lag %s / %.1fs", p.id, pr.AppliedTxs, bytesize.Format(pr.LagBytes), pr.LagSeconds))
		_ = p.bar.Add64(1) // a spinner
	}
}

func (p *progress) newBar(max int64) *progressbar.ProgressBar {
	if max <= 0 {
		max = -1
	}
	return progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionShowBytes(max > 0),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		// The line ends with the bar, so what follows starts on its own.
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
}

// endBar ends the current bar: the copy's at 100% of what was copied (the estimate was an
// estimate), on its own line. Callers hold mu.
func (p *progress) endBar() {
	if p.bar == nil {
		return
	}
	if p.copy {
		// What was copied is all there was: the bar ends full.
		if cur := p.bar.State().CurrentNum; cur > 0 {
			p.bar.ChangeMax64(cur)
		}
	}
	_ = p.bar.Finish()
	p.bar = nil
}

// finish ends the migration's progress before its result is printed.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endBar()
}
