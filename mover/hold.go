package mover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// MaxChangedKeys bounds the rows the apply records after a hold (see ChangedKeys): past it
// the record is dropped and the cutover verifies online again at a later position.
var MaxChangedKeys = 100_000

// applyHold stops the apply at a source position. The applier checks it at every
// boundary between source transactions: before a transaction whose commit record starts
// at or past the hold's threshold, or at a keepalive that far, everything committed
// before the threshold has been applied and nothing after it. There it commits its open
// target transaction and waits. The threshold is first a lower bound of the position
// (the source's insert position before the position is made), then the position itself.
type applyHold struct {
	mu        sync.Mutex
	threshold pglogrepl.LSN
	final     bool          // threshold is the position itself
	changed   chan struct{} // closed and replaced whenever threshold, final or done change
	reached   chan struct{} // closed once the applier stands at the position
	released  bool
	done      bool // the applier stood there and was released
}

func newApplyHold(from pglogrepl.LSN) *applyHold {
	return &applyHold{threshold: from, changed: make(chan struct{}), reached: make(chan struct{})}
}

func (h *applyHold) state() (threshold pglogrepl.LSN, final, released bool, changed chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.threshold, h.final, h.released || h.done, h.changed
}

func (h *applyHold) wake() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *applyHold) setPosition(lsn pglogrepl.LSN) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.threshold, h.final = lsn, true
	h.wake()
}

func (h *applyHold) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		h.released = true
		h.wake()
	}
}

// wait is the applier's side: called at a boundary at or past the threshold, after the
// open target transaction committed. It returns once the applier may go on.
func (h *applyHold) wait(ctx context.Context, boundary pglogrepl.LSN) error {
	for {
		threshold, final, released, changed := h.state()
		switch {
		case released:
			return nil
		case final && boundary < threshold:
			return nil // not there yet: apply on up to the position
		case final:
			h.mu.Lock()
			select {
			case <-h.reached:
			default:
				close(h.reached)
			}
			h.mu.Unlock()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changeSet is the rows the apply changed since a hold: per table, the columns that
// identify a row and each changed row's values of them (text), once each.
type changeSet struct {
	mu       sync.Mutex
	cols     map[string][]string
	keys     map[string]map[string][]string
	n        int
	changes  int64 // row changes applied, a row changed twice counts twice
	overflow bool
}

func newChangeSet() *changeSet {
	return &changeSet{cols: map[string][]string{}, keys: map[string]map[string][]string{}}
}

// add records one row change of table, identified by vals of cols.
func (s *changeSet) add(table string, cols []string, vals [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changes++
	if s.overflow {
		return
	}
	if have, ok := s.cols[table]; ok && !slices.Equal(have, cols) {
		// The table's identity changed in the stream: the record cannot say which rows.
		s.drop()
		return
	}
	s.cols[table] = cols
	k := phantomKeyOf(table, vals)
	ks := s.keys[table]
	if ks == nil {
		ks = map[string][]string{}
		s.keys[table] = ks
	}
	if _, ok := ks[k]; ok {
		return
	}
	if s.n >= MaxChangedKeys {
		s.drop()
		return
	}
	row := make([]string, len(vals))
	for i, v := range vals {
		row[i] = string(v)
	}
	ks[k] = row
	s.n++
}

func (s *changeSet) drop() {
	s.overflow = true
	s.cols, s.keys, s.n = nil, nil, 0
}

// ChangedKeys is every row the apply changed since the position of the last successful
// HoldApply: per table (as configured), the columns that identify a row (its replica
// identity) and each changed row's values of them as text; changes is the row changes
// applied meanwhile (a row changed twice counts twice). ok is false when there was no
// such hold, or more than MaxChangedKeys rows changed since: verify online again.
func (m *Mover) ChangedKeys() (cols map[string][]string, keys map[string][][]string, changes int64, ok bool) {
	m.mu.Lock()
	s := m.changes
	m.mu.Unlock()
	if s == nil {
		return nil, nil, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflow {
		return nil, nil, s.changes, false
	}
	cols, keys = map[string][]string{}, map[string][][]string{}
	for t, c := range s.cols {
		cols[t] = append([]string(nil), c...)
		for _, row := range s.keys[t] {
			keys[t] = append(keys[t], row)
		}
	}
	return cols, keys, s.changes, true
}

// HoldApply stops the apply at an exact source position and runs at there. The apply stops
// at the first boundary between source transactions at or past from (the source's insert
// position, read before position is called); position makes the position (on the source:
// a temporary slot's consistent point, at least from) and returns it; the apply goes on
// to it, holds there while at runs (on the target: a REPEATABLE READ snapshot is taken,
// which then holds exactly the source transactions that commit before the position), and
// goes on. From then on the apply records the rows it changes (ChangedKeys). The hold is
// released whatever happens.
func (m *Mover) HoldApply(ctx context.Context, from pglogrepl.LSN, position func(context.Context) (pglogrepl.LSN, error), at func(context.Context) error) error {
	h := newApplyHold(from)
	m.mu.Lock()
	if m.hold != nil {
		m.mu.Unlock()
		return errors.New("mover: the apply is held already: one online verify at a time")
	}
	m.hold = h
	m.changes = nil // a record belongs to the position it started at
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.hold = nil
		m.mu.Unlock()
		h.release()
	}()
	lsn, err := position(ctx)
	if err != nil {
		return err
	}
	if lsn < from {
		return fmt.Errorf("mover: position %s is before %s: the source's WAL went back (restored?); verify again", lsn, from)
	}
	h.setPosition(lsn)
	if err := m.waitHeld(ctx, h, lsn); err != nil {
		return fmt.Errorf("mover: hold the apply at %s: %w", lsn, err)
	}
	if err := at(ctx); err != nil {
		return err
	}
	// The applier waits in h until released: every change it applies from now on is
	// after the position.
	m.mu.Lock()
	m.changes = newChangeSet()
	m.mu.Unlock()
	return nil
}

// waitHeld waits until the applier stands at lsn; like WaitApplied, it commits a tiny
// transaction on the source when nothing comes, so that a boundary past lsn arrives.
func (m *Mover) waitHeld(ctx context.Context, h *applyHold, lsn pglogrepl.LSN) error {
	m.waiters.Add(1)
	defer m.waiters.Add(-1)
	m.nudge(ctx)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		m.mu.Lock()
		running, fatal := m.running, m.fatal
		m.mu.Unlock()
		if fatal != nil {
			return fmt.Errorf("catch-up stopped: %w", fatal)
		}
		if !running {
			return errors.New("catch-up is not running: Start the mover first")
		}
		select {
		case <-h.reached:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			m.nudge(ctx)
		}
	}
}

// currentHold is the hold the applier checks at each boundary (nil: none).
func (m *Mover) currentHold() *applyHold {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hold
}

// recorder is where the apply notes the rows it changes: nil while no record runs.
func (m *Mover) recorder() func(table string, cols []string, vals [][]byte) {
	m.mu.Lock()
	s := m.changes
	m.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.add
}
