package mover

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/reshard/reshard/internal/clock"
)

// throttle enforces MaxRate over copy and apply, and the copy's pause while another slot
// on the source lags by more than MaxSourceLag.
type throttle struct {
	lim    *rate.Limiter // nil: unlimited
	burst  int
	paused atomic.Bool
}

func newThrottle(maxRate int64) *throttle {
	t := &throttle{}
	if maxRate > 0 {
		t.burst = int(min(max(maxRate/10, 1), 1<<20))
		t.lim = rate.NewLimiter(rate.Limit(maxRate), t.burst)
	}
	return t
}

// wait blocks until n more bytes may pass.
func (t *throttle) wait(ctx context.Context, n int) error {
	if t == nil || t.lim == nil {
		return nil
	}
	for n > 0 {
		k := min(n, t.burst)
		if err := t.lim.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// waitUnpaused blocks while the copy is paused for source lag.
func (t *throttle) waitUnpaused(ctx context.Context) error {
	for t != nil && t.paused.Load() {
		if err := clock.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}
