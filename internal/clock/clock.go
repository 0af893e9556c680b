package clock

import (
	"context"
	"time"
)

// Sleep waits d or until ctx is done, and then returns ctx's error: a caller in a retry
// loop stops at once when it is cancelled instead of after its backoff.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
