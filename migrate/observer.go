package migrate

import "github.com/reshard/reshard/catalog"

// Observer is told what a driver does to its migrations, for metrics
// (*internal/metrics.Metrics is one). Its methods must be quick and safe for concurrent use:
// they are called from the driver's goroutines, with a record they must not keep.
type Observer interface {
	// Migration: a journal record as this driver read it (when it opens the migration)
	// or wrote it (every journal write, the mover's checkpoints included).
	Migration(m *catalog.Migration)
	// CutOver: m has flipped and opened on its target; m.Timings has its window and steps.
	CutOver(m *catalog.Migration)
	// Failed: this driver's run of m stopped with an error (m may still be unfinished).
	Failed(m *catalog.Migration)
}

type nopObserver struct{}

func (nopObserver) Migration(*catalog.Migration) {}
func (nopObserver) CutOver(*catalog.Migration)   {}
func (nopObserver) Failed(*catalog.Migration)    {}

func (e *Executor) observer() Observer {
	if e.Observer != nil {
		return e.Observer
	}
	return nopObserver{}
}

// observed tells obs of m after a journal write that succeeded, and returns err.
func observed(obs Observer, m *catalog.Migration, err error) error {
	if err == nil {
		obs.Migration(m)
	}
	return err
}
