package catalog

import (
	"context"
	"errors"
	"fmt"
)

// WriteOption conditions one write of the store.
type WriteOption func(*write)

// HeldBy makes a write happen only while l is held: its transaction also compares l's lock
// key, so a process that lost the lock (its lease expired while it was paused, or cut off
// from etcd) cannot change what the lock protects, whatever it read before. A write
// refused for that reason fails with an error wrapping ErrLockLost, and one is not even
// sent once l.Err says the lock may have been lost.
func HeldBy(l *Lock) WriteOption {
	return func(w *write) {
		if l != nil {
			w.cmps = append(w.cmps, l.IsOwner())
			w.locks = append(w.locks, l)
		}
	}
}

func (w *write) with(opts []WriteOption) {
	for _, o := range opts {
		o(w)
	}
}

// checkLocks fails fast, before a guarded write is sent, when a lock may have been lost.
func (w *write) checkLocks() error {
	for _, l := range w.locks {
		if err := l.Err(); err != nil {
			return err
		}
	}
	return nil
}

// whyConflict tells a write that failed its compares because a lock it was guarded by is
// gone (ErrLockLost) from an ordinary conflict (err, returned as it is).
func (s *Store) whyConflict(ctx context.Context, w *write, err error) error {
	if !errors.Is(err, ErrConflict) {
		return err
	}
	for _, l := range w.locks {
		ok, herr := s.held(context.WithoutCancel(ctx), l)
		if herr == nil && !ok {
			l.markLost()
			return fmt.Errorf("%s: %w", l.name, ErrLockLost)
		}
	}
	return err
}
