package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Apply holds: how `reshard verify ID` asks the driver of a migration that is catching up
// to hold its apply at one source position while the verify takes its target snapshot.
// The verify writes a request under locks/holds/<id>/request on a lease of its own (a
// verify that dies or pauses past the lease loses its request, and the driver lets go);
// the driver answers under locks/holds/<id>/ack on its migration lock's lease, only while
// it holds that lock. One request at a time per migration.

// HoldTTL is the lease (seconds) of a hold request: a verify that stops renewing it (dead,
// paused) loses its request after that long, and the driver's apply goes on.
const HoldTTL = 5

// ErrHoldBusy: another verify's request for the same migration is pending.
var ErrHoldBusy = errors.New("another verify of this migration is holding its apply")

// States of a HoldAck.
const (
	HoldArmed   = "armed"   // the apply stops at the first transaction boundary at or past From
	HoldHeld    = "held"    // the apply stands at LSN and waits
	HoldEnded   = "ended"   // the hold ended before the request released it (Reason says why)
	HoldRefused = "refused" // the driver did not hold (Reason says why)
)

// HoldRequest is a verify's request. From is the source's WAL insert position read before
// the verify makes its position; LSN is that position once made.
type HoldRequest struct {
	From string `json:"from"`
	LSN  string `json:"lsn,omitempty"`
}

// HoldAck is the driver's answer to the request created at revision Request.
type HoldAck struct {
	Request int64  `json:"request"`
	State   string `json:"state"`
	LSN     string `json:"lsn,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func (s *Store) holdKeys(id string) (req, ack string, err error) {
	if !ValidName(id) {
		return "", "", fmt.Errorf("%w: migration id %q", ErrInvalid, id)
	}
	pfx := s.key(pfxLocks + "holds/" + id + "/")
	return pfx + "request", pfx + "ack", nil
}

// HoldTicket is one pending request of a verify (see RequestHold).
type HoldTicket struct {
	s        *Store
	req, ack string
	lease    clientv3.LeaseID
	created  int64
	stop     context.CancelFunc
}

// RequestHold writes a request to hold migration id's apply from position from on, on a
// lease this process renews until Close. ErrHoldBusy when another request is pending.
func (s *Store) RequestHold(ctx context.Context, id, from string) (*HoldTicket, error) {
	req, ack, err := s.holdKeys(id)
	if err != nil {
		return nil, err
	}
	g, err := s.cli.Grant(ctx, HoldTTL)
	if err != nil {
		return nil, fmt.Errorf("hold request: %w", s.wrapEtcd(err))
	}
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	if _, err := s.cli.KeepAlive(kctx, g.ID); err != nil {
		stop()
		return nil, fmt.Errorf("hold request: %w", s.wrapEtcd(err))
	}
	t := &HoldTicket{s: s, req: req, ack: ack, lease: g.ID, stop: stop}
	b, _ := json.Marshal(HoldRequest{From: from})
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(req), "=", 0)).
		Then(clientv3.OpPut(req, string(b), clientv3.WithLease(g.ID))).Commit()
	if err == nil && !resp.Succeeded {
		err = ErrHoldBusy
	}
	if err != nil {
		t.Close(ctx)
		return nil, fmt.Errorf("hold request for %s: %w", id, s.wrapEtcd(err))
	}
	t.created = resp.Header.Revision
	return t, nil
}

// SetPosition tells the driver the position to hold at.
func (t *HoldTicket) SetPosition(ctx context.Context, lsn string) error {
	b, _ := json.Marshal(HoldRequest{LSN: lsn})
	resp, err := t.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(t.req), "=", t.created)).
		Then(clientv3.OpPut(t.req, string(b), clientv3.WithLease(t.lease))).Commit()
	if err == nil && !resp.Succeeded {
		err = errors.New("the request vanished (its lease expired)")
	}
	if err != nil {
		return fmt.Errorf("hold request: set the position: %w", t.s.wrapEtcd(err))
	}
	return nil
}

// WaitAck waits for the driver's answer to this request in state want, and returns it with
// the revision it was written at. An answer ended or refused is an error with its reason.
func (t *HoldTicket) WaitAck(ctx context.Context, want string) (HoldAck, int64, error) {
	resp, err := t.s.cli.Get(ctx, t.ack)
	if err != nil {
		return HoldAck{}, 0, t.s.wrapEtcd(err)
	}
	if a, rev, done, err := t.answer(resp.Kvs, want); done {
		return a, rev, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range t.s.cli.Watch(wctx, t.ack, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := w.Err(); err != nil {
			return HoldAck{}, 0, t.s.wrapEtcd(err)
		}
		for _, ev := range w.Events {
			if a, rev, done, err := t.answer([]*mvccKV{ev.Kv}, want); done {
				return a, rev, err
			}
		}
	}
	return HoldAck{}, 0, fmt.Errorf("no answer from the migration's driver: %w", context.Cause(ctx))
}

func (t *HoldTicket) answer(kvs []*mvccKV, want string) (HoldAck, int64, bool, error) {
	if len(kvs) == 0 || len(kvs[0].Value) == 0 {
		return HoldAck{}, 0, false, nil
	}
	var a HoldAck
	if err := json.Unmarshal(kvs[0].Value, &a); err != nil || a.Request != t.created {
		return HoldAck{}, 0, false, nil // another request's answer
	}
	switch a.State {
	case want:
		return a, kvs[0].ModRevision, true, nil
	case HoldEnded, HoldRefused:
		return a, kvs[0].ModRevision, true, fmt.Errorf("the driver %s: %s", a.State, a.Reason)
	}
	return HoldAck{}, 0, false, nil
}

// Release ends the hold, and reports whether the driver still held it when the release
// arrived, i.e. whether its answer written at revision held is still its last word: the
// driver writes that the hold ended before its apply goes on.
func (t *HoldTicket) Release(ctx context.Context, held int64) (bool, error) {
	resp, err := t.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(t.ack), "=", held)).
		Then(clientv3.OpDelete(t.req)).Else(clientv3.OpDelete(t.req)).Commit()
	if err != nil {
		return false, fmt.Errorf("hold request: release: %w", t.s.wrapEtcd(err))
	}
	return resp.Succeeded, nil
}

// Close revokes the request's lease, which deletes the request: the driver lets go.
func (t *HoldTicket) Close(ctx context.Context) {
	t.stop()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeAttempt)
	defer cancel()
	_, _ = t.s.cli.Revoke(rctx, t.lease)
}

// WaitHoldRequest waits until migration id's hold request changes after revision after
// (0: until there is one) and returns it: the request, the revision it was created at and
// the revision of this change; present is false when the request was deleted.
func (s *Store) WaitHoldRequest(ctx context.Context, id string, after int64) (req HoldRequest, created, rev int64, present bool, err error) {
	key, _, err := s.holdKeys(id)
	if err != nil {
		return req, 0, 0, false, err
	}
	resp, err := s.get(ctx, key)
	if err != nil {
		return req, 0, 0, false, s.wrapEtcd(err)
	}
	if len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision > after {
		kv := resp.Kvs[0]
		err := json.Unmarshal(kv.Value, &req)
		return req, kv.CreateRevision, kv.ModRevision, true, err
	}
	from := max(after, resp.Header.Revision) + 1
	if len(resp.Kvs) == 0 && after > 0 {
		from = after + 1 // a deletion since after is the change
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range s.cli.Watch(wctx, key, clientv3.WithRev(from)) {
		if err := w.Err(); err != nil {
			return req, 0, 0, false, s.wrapEtcd(err)
		}
		for _, ev := range w.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return req, 0, ev.Kv.ModRevision, false, nil
			}
			err := json.Unmarshal(ev.Kv.Value, &req)
			return req, ev.Kv.CreateRevision, ev.Kv.ModRevision, true, err
		}
	}
	return req, 0, 0, false, context.Cause(ctx)
}

// AckHold writes the driver's answer, on its lock's lease and only while l is held.
func (s *Store) AckHold(ctx context.Context, l *Lock, id string, a HoldAck) error {
	_, key, err := s.holdKeys(id)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(a)
	resp, _, err := s.sendTxn(ctx, []clientv3.Cmp{l.IsOwner()}, []clientv3.Op{clientv3.OpPut(key, string(b), clientv3.WithLease(l.session.Lease()))})
	if err == nil && !resp.Succeeded {
		err = ErrLockLost
	}
	if err != nil {
		return fmt.Errorf("answer the hold request of %s: %w", id, s.wrapEtcd(err))
	}
	return nil
}
