package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/clock"
)

// Predictor is a Replicator that reports its lag and measured apply rate (mover.Mover
// does): with one, a cutover predicts its window before it freezes, and freezes only
// once the prediction is under Options.MaxWindow.
type Predictor interface {
	Lag(ctx context.Context) (bytes int64, seconds float64, err error)
	// ApplyRate is bytes of source WAL applied per second while behind (0: unknown).
	ApplyRate() float64
}

// ErrWindowTooLong is returned when the predicted window stayed over Options.MaxWindow
// for Options.CatchupTimeout: nothing was frozen; the move may try again.
var ErrWindowTooLong = errors.New("the predicted write window stays over the bound")

// What the prediction assumes where it has no measurement: the apply rate of a mover that
// has not been behind for a second, and the cost of comparing one changed row on both
// sides (measured here: 1,500 rows of five tables, partitioned ones among them, in
// 0.1 s) or of hashing one row of a range in the window (0.1 s per 50,000 rows).
const (
	assumedApplyRate = 4 << 20 // bytes per second
	perChangedRow    = 70 * time.Microsecond
	perRangeRow      = 2 * time.Microsecond
)

// Prediction is a window predicted before the freeze, by part.
type Prediction struct {
	Total   time.Duration `json:"total"`
	Fixed   time.Duration `json:"fixed"`    // the steps' round trips to etcd and the shards
	CatchUp time.Duration `json:"catch_up"` // the lag at the apply rate
	Compare time.Duration `json:"compare"`  // the rows the window compares
	Rows    int64         `json:"rows"`     // those rows
}

func (p Prediction) String() string {
	return fmt.Sprintf("%s (round trips %s, catch-up %s, compare %d rows %s)", p.Total.Round(time.Millisecond),
		p.Fixed.Round(time.Millisecond), p.CatchUp.Round(time.Millisecond), p.Rows, p.Compare.Round(time.Millisecond))
}

// predict estimates the window if the freeze came now: the round trips its steps make (3
// to etcd: freeze, journal, flip; 6 to the source and target: fence, drain, fence LSN,
// sequences, compare, open), measured now; the catch-up of the current lag at the
// measured apply rate; and the compare of the rows changed since the online verify (or
// of the whole range without one).
func (w *window) predict(p Predictor) Prediction {
	ctx := w.ctx
	var pr Prediction
	start := time.Now()
	_, _ = w.env.Catalog.GetMigration(ctx, w.m.ID)
	etcd := time.Since(start)
	start = time.Now()
	_, _ = w.env.Source.Exec(ctx, "SELECT 1")
	pg := time.Since(start)
	pr.Fixed = 3*etcd + 6*pg
	if lag, _, err := p.Lag(ctx); err == nil && lag > 0 {
		rate := p.ApplyRate()
		if rate <= 0 {
			rate = assumedApplyRate
		}
		pr.CatchUp = time.Duration(float64(lag) / rate * float64(time.Second))
	}
	switch {
	case w.opts.SkipVerify:
	case w.holder != nil:
		if _, keys, _, ok := w.holder.ChangedKeys(); ok {
			for _, ks := range keys {
				pr.Rows += int64(len(ks))
			}
			pr.Compare = time.Duration(pr.Rows) * perChangedRow
		} else {
			pr.Rows = w.m.RowsCopied
			pr.Compare = time.Duration(pr.Rows) * perRangeRow
		}
	default:
		pr.Rows = w.m.RowsCopied
		pr.Compare = time.Duration(pr.Rows) * perRangeRow
	}
	pr.Total = pr.Fixed + pr.CatchUp + pr.Compare
	return pr
}

// settle brings the mover up to the source's present and predicts the window, until the
// prediction is under MaxWindow: while it is over, the cutover keeps catching up (and
// says so in the journal, for status), and verifies online again when the rows changed
// since the last online verify are what makes it long. CatchupTimeout bounds it.
func (w *window) settle() error {
	ctx, env, m := w.ctx, w.env, w.m
	p, _ := env.Mover.(Predictor)
	deadline := time.Now().Add(w.opts.CatchupTimeout)
	said := false
	for {
		took, err := catchUpBefore(ctx, env, m.ID, w.opts.CatchupTimeout)
		w.res.CatchupBefore += took
		if err != nil {
			return err
		}
		if p == nil {
			return nil
		}
		pr := w.predict(p)
		w.res.Predicted = pr
		if m.Verify == nil {
			m.Verify = &catalog.Verification{}
		}
		m.Verify.PredictedWindow = pr.Total.Seconds()
		if pr.Total <= w.opts.MaxWindow {
			m.Verify.Waiting = ""
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: predicted %s, bound %s (--max-window), after %s (--catchup-timeout): lower the write rate on the range, or raise the bound",
				ErrWindowTooLong, pr, w.opts.MaxWindow, w.opts.CatchupTimeout)
		}
		if !said {
			said = true
			m.Verify.Waiting = fmt.Sprintf("predicted window %s over the bound %s: catching up before the freeze", pr, w.opts.MaxWindow)
			w.log("not freezing yet", "predicted", pr.String(), "max_window", w.opts.MaxWindow)
			if err := env.Catalog.PutMigration(ctx, m); err != nil {
				return err
			}
		}
		if w.holder != nil && pr.Compare > w.opts.MaxWindow/2 {
			// Waiting only adds changed rows: a new position starts them again.
			if err := w.verifyOnline(w.holder); err != nil {
				return fmt.Errorf("online verify: %w", err)
			}
			continue
		}
		if err := clock.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}
