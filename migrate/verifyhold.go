package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/clock"
)

// HoldBound bounds each wait of the driver for a `reshard verify ID` (catalog.RequestHold):
// for the verify's position once the apply is stopped, and for its release once the apply
// stands there. A verify that pauses or dies never stalls the catch-up for longer.
var HoldBound = 10 * time.Second

// ErrNoHold: the migration's driver did not hold its apply for a verify (none runs, it
// refused, it did not answer in time, or it let go before the target's snapshot was
// taken). The verify can only compare each shard from its own snapshot.
var ErrNoHold = errors.New("the migration's driver did not hold its apply at the verify's position")

// holdCatalog is what serving hold requests needs of the catalog (*catalog.Store).
type holdCatalog interface {
	WaitHoldRequest(ctx context.Context, id string, after int64) (req catalog.HoldRequest, created, rev int64, present bool, err error)
	AckHold(ctx context.Context, l *catalog.Lock, id string, a catalog.HoldAck) error
}

// serveHolds answers `reshard verify ID`'s hold requests while the catch-up runs before the
// cutover. stop ends the service, and a hold with it, and returns once the apply goes on:
// it is called before the cutover starts, whose own online verify records the rows the
// apply changes from its position on, a record a later hold would restart.
func (e *Executor) serveHolds(ss *session, mv Mover) (stop func()) {
	cat, ok := e.Catalog.(holdCatalog)
	h, hok := mv.(cutover.ApplyHolder)
	if !ok || !hok || ss.lock == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	done := make(chan struct{})
	hs := &holdServer{cat: cat, lock: ss.lock, id: ss.m.ID, h: h, log: ss.env.Log}
	go func() {
		defer close(done)
		hs.serve(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

type holdServer struct {
	cat  holdCatalog
	lock *catalog.Lock
	id   string
	h    cutover.ApplyHolder
	log  *slog.Logger
}

func (hs *holdServer) serve(ctx context.Context) {
	var after int64
	for ctx.Err() == nil {
		req, created, rev, present, err := hs.cat.WaitHoldRequest(ctx, hs.id, after)
		if err != nil {
			if ctx.Err() == nil {
				hs.log.Warn("verify hold requests: etcd", "err", err)
				_ = clock.Sleep(ctx, time.Second)
			}
			continue
		}
		after = rev
		if present && req.LSN == "" { // a new request (one with a position is one we let go)
			after = hs.hold(ctx, req, created, after)
		}
	}
}

// ack writes the answer even as ctx ends (the cutover starts): the verify must learn that
// the hold ended before the apply goes on.
func (hs *holdServer) ack(ctx context.Context, created int64, state string, lsn pglogrepl.LSN, reason string) error {
	a := catalog.HoldAck{Request: created, State: state, Reason: reason}
	if lsn != 0 {
		a.LSN = lsn.String()
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), HoldBound)
	defer cancel()
	return hs.cat.AckHold(actx, hs.lock, hs.id, a)
}

// hold serves one request: the apply stops at its From, goes on to the verify's position
// and waits there until the verify releases it, its request vanishes or HoldBound passes.
// It returns the last revision of the request it saw.
func (hs *holdServer) hold(ctx context.Context, req catalog.HoldRequest, created, after int64) int64 {
	from, err := pglogrepl.ParseLSN(req.From)
	if err != nil {
		_ = hs.ack(ctx, created, catalog.HoldRefused, 0, fmt.Sprintf("bad position %q", req.From))
		return after
	}
	hctx, cancel := context.WithTimeout(ctx, 3*HoldBound) // the apply must also reach the position
	defer cancel()
	var lsn pglogrepl.LSN
	err = hs.h.HoldApply(hctx, from, func(ctx context.Context) (pglogrepl.LSN, error) {
		if err := hs.ack(ctx, created, catalog.HoldArmed, 0, ""); err != nil {
			return 0, err
		}
		var err error
		lsn, err = hs.waitPosition(ctx, &after)
		return lsn, err
	}, func(ctx context.Context) error {
		if err := hs.ack(ctx, created, catalog.HoldHeld, lsn, ""); err != nil {
			return err
		}
		if reason := hs.waitRelease(ctx, &after); reason != "" {
			hs.log.Info("verify hold ended", "lsn", lsn.String(), "reason", reason)
			if err := hs.ack(ctx, created, catalog.HoldEnded, lsn, reason); err != nil {
				hs.log.Warn("verify hold ended unannounced", "err", err)
			}
		}
		return nil
	})
	if err != nil {
		hs.log.Info("verify hold refused", "err", err)
		_ = hs.ack(ctx, created, catalog.HoldRefused, lsn, err.Error())
	}
	return after
}

// waitPosition waits, at most HoldBound, for the verify to write its position.
func (hs *holdServer) waitPosition(ctx context.Context, after *int64) (pglogrepl.LSN, error) {
	wctx, cancel := context.WithTimeout(ctx, HoldBound)
	defer cancel()
	for {
		r, _, rev, present, err := hs.cat.WaitHoldRequest(wctx, hs.id, *after)
		switch {
		case err != nil && ctx.Err() == nil && wctx.Err() != nil:
			return 0, fmt.Errorf("no position from the verify within %s", HoldBound)
		case err != nil:
			return 0, err
		case !present:
			return 0, errors.New("the verify withdrew its request")
		}
		*after = rev
		if r.LSN != "" {
			return pglogrepl.ParseLSN(r.LSN)
		}
	}
}

// waitRelease waits while the apply is held: "" once the verify released it (its request
// deleted, or vanished with its lease), else why the hold ends anyway.
func (hs *holdServer) waitRelease(ctx context.Context, after *int64) string {
	wctx, cancel := context.WithTimeout(ctx, HoldBound)
	defer cancel()
	for {
		_, _, rev, present, err := hs.cat.WaitHoldRequest(wctx, hs.id, *after)
		switch {
		case err != nil && ctx.Err() != nil:
			return "its bound passed, or the migration's cutover starts (or its driver stops)"
		case err != nil && wctx.Err() != nil:
			return fmt.Sprintf("not released within %s: the catch-up goes on", HoldBound)
		case err != nil:
			return err.Error()
		case !present:
			*after = rev
			return ""
		}
		*after = rev
	}
}

// DriverHold is the apply holder of `reshard verify ID` (cutover.VerifyAt): it asks the
// driver of migration ID, through etcd, to hold its apply at the verify's position while
// the target's snapshot is taken. Any failure to hold wraps ErrNoHold.
type DriverHold struct {
	Store *catalog.Store
	ID    string
	// Answer bounds the wait for the driver's first answer (default 5 s); Reach the wait
	// for its apply to reach the position (default 3*HoldBound).
	Answer, Reach time.Duration
}

// HoldApply implements cutover.ApplyHolder through the driver (see Mover.HoldApply).
func (d DriverHold) HoldApply(ctx context.Context, from pglogrepl.LSN, position func(context.Context) (pglogrepl.LSN, error), at func(context.Context) error) error {
	t, err := d.Store.RequestHold(ctx, d.ID, from.String())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoHold, err)
	}
	defer t.Close(ctx)
	if _, _, err := d.wait(ctx, t, catalog.HoldArmed, d.Answer, 5*time.Second); err != nil {
		return err
	}
	lsn, err := position(ctx)
	if err != nil {
		return err
	}
	if err := t.SetPosition(ctx, lsn.String()); err != nil {
		return fmt.Errorf("%w: %w", ErrNoHold, err)
	}
	a, rev, err := d.wait(ctx, t, catalog.HoldHeld, d.Reach, 3*HoldBound)
	if err != nil {
		return err
	}
	if a.LSN != lsn.String() {
		return fmt.Errorf("%w: it held at %s, not at %s", ErrNoHold, a.LSN, lsn)
	}
	if err := at(ctx); err != nil {
		return err
	}
	held, err := t.Release(ctx, rev)
	if err == nil && !held {
		err = errors.New("it let go before the target's snapshot was taken")
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoHold, err)
	}
	return nil
}

func (d DriverHold) wait(ctx context.Context, t *catalog.HoldTicket, state string, bound, def time.Duration) (catalog.HoldAck, int64, error) {
	if bound <= 0 {
		bound = def
	}
	wctx, cancel := context.WithTimeoutCause(ctx, bound, fmt.Errorf("none within %s", bound))
	defer cancel()
	a, rev, err := t.WaitAck(wctx, state)
	if err != nil {
		return a, rev, fmt.Errorf("%w: %w", ErrNoHold, err)
	}
	return a, rev, nil
}

// ChangedKeys: a verify records nothing (the cutover verifies again with its own hold).
func (DriverHold) ChangedKeys() (map[string][]string, map[string][][]string, int64, bool) {
	return nil, nil, 0, false
}
