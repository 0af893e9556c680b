package mover

import (
	"context"
	"errors"
	"fmt"

	"github.com/reshard/reshard/internal/pgerr"
)

// fatalError marks an error that retrying cannot fix (a missing slot, a change the target
// refuses, a stream the mover cannot decode): catch-up stops and reports it through Err.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatalf(format string, args ...any) error {
	return &fatalError{fmt.Errorf(format, args...)}
}

// transient reports whether err may go away by reconnecting: the network, a server
// restarting, a slot still held by a WAL sender that has not noticed its client left.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var fe *fatalError
	if errors.As(err, &fe) {
		return false
	}
	if pgerr.Code(err) != "" {
		return pgerr.InClass(err, pgerr.ClassConnectionException) ||
			pgerr.Is(err, pgerr.AdminShutdown, pgerr.CrashShutdown, pgerr.CannotConnectNow,
				pgerr.ObjectInUse, // the slot's previous WAL sender is still there
				pgerr.TooManyConnections, pgerr.ConfigurationLimitExceeded,
				pgerr.SerializationFailure, pgerr.DeadlockDetected)
	}
	// Anything else is the network or the connection going away.
	return true
}

// ErrTruncated: a TRUNCATE on the source removed rows of a table of the move. TRUNCATE
// writes no row changes, so the target cannot follow it and its copy of the range is no
// longer complete; the move has to be cancelled and started again.
var ErrTruncated = errors.New("a TRUNCATE on the source removed rows without row changes, so the target's copy of the range is no longer complete")

// ErrSlotInvalidated: the source invalidated the move's replication slot (wal_status lost)
// because it held more WAL than max_slot_wal_keep_size; the changes since the copy are gone
// with that WAL, so the move has to be cancelled and started again.
var ErrSlotInvalidated = errors.New("invalidated by the source")

// slotInvalidated is the one-line error for migration id whose slot the source invalidated.
func slotInvalidated(slot, id string) error {
	return &fatalError{fmt.Errorf("source: replication slot %s was %w (wal_status lost: it held more WAL than max_slot_wal_keep_size), so the changes it kept for the move are gone: cancel the migration (reshard cancel %s) and move again, with a larger max_slot_wal_keep_size or at a quieter time", slot, ErrSlotInvalidated, id)}
}
