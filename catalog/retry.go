package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retries through a leader change.
//
// While a replicated etcd elects a leader, or after the member a client talks to went
// away, requests fail with errors that say nothing about the request itself: no leader,
// leader changed, request timed out, server stopped, connection closing. The store retries
// those with backoff, for at most the retry budget (WithRetry) counted from the first
// failure, and never past its context.
//
// A read is simply sent again. A write may have applied although its answer was lost (a
// timeout, a connection lost after the request left), and it is never re-sent as if
// nothing had happened: every write of the store is a compare-and-swap transaction
// (compares of the revisions it read, and for history events the history counter), so of
// several sends of one write at most one applies. The re-send either applies or fails its
// compares; when it fails them after an attempt whose outcome is unknown, the store reads
// whether that attempt applied (applied) and reports success exactly once, or the conflict.

const (
	defaultRetryBudget = 30 * time.Second
	retryFirstWait     = 50 * time.Millisecond
	retryMaxWait       = time.Second
	// writeAttempt bounds one send of a write (at most 128 small operations). etcd itself
	// answers a proposal lost with its leader only after its request timeout (7s with the
	// default election timeout); a re-send is safe (see above) and may meet the new leader.
	writeAttempt = 2 * time.Second
)

// WithRetry sets how long the store keeps retrying a call that fails with a transient etcd
// error (a leader election, a member going away), counted from its first failure; 0 turns
// retries off. Default 30s: far above an election, which takes a few seconds.
func WithRetry(budget time.Duration) Option { return func(s *Store) { s.retryBudget = budget } }

// transient reports an etcd error that says nothing about the request: it may succeed if
// sent again. A context error of the caller's own context is not transient (retry checks
// that first).
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, rpctypes.ErrTooManyRequests) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		// no leader, leader changed, stopped, request timed out (for whatever reason),
		// unhealthy cluster; not: compacted, no space, too large, auth, ...
		return ee.Code() == codes.Unavailable
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.Canceled:
		return false // our own client is closing
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // a per-attempt deadline, not the caller's (retry checks that)
	}
	// A member shutting down fails a proposal with raft's own error, which reaches the
	// client as code Unknown.
	return strings.Contains(err.Error(), "raft: stopped")
}

// retry runs op until it succeeds, fails with a non-transient error, ctx ends, or the
// retry budget since op's first failure is spent. op must be safe to run again: a read, or
// a write whose caller resolves an unknown outcome (sendTxn). Each attempt requires a
// leader: a member that knows it has none refuses at once ("no leader") instead of holding
// the request until its timeout.
func (s *Store) retry(ctx context.Context, op func(context.Context) error) error {
	return s.retryEach(ctx, 0, op)
}

// retryWrite is retry with each attempt bounded by writeAttempt: a proposal lost with its
// leader is otherwise answered only after etcd's request timeout.
func (s *Store) retryWrite(ctx context.Context, op func(context.Context) error) error {
	return s.retryEach(ctx, writeAttempt, op)
}

func (s *Store) retryEach(ctx context.Context, attempt time.Duration, op func(context.Context) error) error {
	var first time.Time
	wait := retryFirstWait
	for {
		actx, cancel := clientv3.WithRequireLeader(ctx), context.CancelFunc(func() {})
		if attempt > 0 {
			actx, cancel = context.WithTimeout(actx, attempt)
		}
		err := op(actx)
		cancel()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		if first.IsZero() {
			first = time.Now()
		}
		if s.onRetry != nil {
			s.onRetry(err)
		}
		if time.Since(first) >= s.retryBudget {
			return fmt.Errorf("still failing after retrying for %v: %w", s.retryBudget, err)
		}
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
		wait = min(2*wait, retryMaxWait)
	}
}

// get is a Get retried through transient errors.
func (s *Store) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	var resp *clientv3.GetResponse
	err := s.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = s.kv.Get(ctx, key, opts...)
		return err
	})
	return resp, err
}

// read is a read-only transaction (one revision) retried through transient errors.
func (s *Store) read(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	var resp *clientv3.TxnResponse
	err := s.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = s.kv.Txn(ctx).Then(ops...).Commit()
		return err
	})
	return resp, err
}

// sendTxn sends a compare-and-swap transaction, and the very same request again through
// transient errors. unknown reports that an attempt failed after it may have been sent: it
// may have applied, and a failed compare of a later attempt may be its doing (the caller
// resolves that by reading). If etcd never answers, the error says the outcome is unknown.
func (s *Store) sendTxn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (resp *clientv3.TxnResponse, unknown bool, err error) {
	err = s.retryWrite(ctx, func(ctx context.Context) error {
		r, err := s.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			// Even "no leader" may come after the request reached a member that forwarded
			// it: count every failed attempt as possibly applied, unless etcd refused it
			// before proposing it.
			unknown = unknown || !refused(err)
			return err
		}
		resp = r
		return nil
	})
	if err != nil && !unknown && refused(err) {
		return nil, false, refusal(err)
	}
	if err != nil && unknown {
		err = fmt.Errorf("%w (etcd did not say whether this write applied: it may have, or may still; load the catalog again to see)", s.wrapEtcd(err))
	} else if err != nil {
		err = s.wrapEtcd(err)
	}
	return resp, unknown, err
}

// appliedEvent reads whether a write that appended history applied: history keys are
// written once, each by the one transaction that took its seq, so the write applied if and
// only if its first event's key holds exactly what it sent. It returns the revision it
// applied at.
func (s *Store) appliedEvent(ctx context.Context, key string, val []byte) (int64, bool, error) {
	resp, err := s.get(ctx, key)
	if err != nil {
		return 0, false, fmt.Errorf("read %s to see whether an unanswered write applied: %w", key, s.wrapEtcd(err))
	}
	if len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, val) {
		return resp.Kvs[0].ModRevision, true, nil
	}
	return 0, false, nil
}

// appliedEffects reads whether a write without history events applied, once its re-send
// failed its compares: a transaction applies whole, so it did if every key it puts holds
// exactly its bytes (migration records carry their update time to the nanosecond, so
// another writer's are never the same) and every key it deletes is gone. It returns the
// revision it applied at.
func (s *Store) appliedEffects(ctx context.Context, ops []clientv3.Op) (int64, bool, error) {
	var gets []clientv3.Op
	var want [][]byte // nil: must be absent
	for _, op := range ops {
		switch {
		case op.IsPut():
			gets, want = append(gets, clientv3.OpGet(string(op.KeyBytes()))), append(want, op.ValueBytes())
		case op.IsDelete():
			gets, want = append(gets, clientv3.OpGet(string(op.KeyBytes()), clientv3.WithCountOnly())), append(want, nil)
		}
	}
	if len(gets) == 0 {
		return 0, false, nil
	}
	resp, err := s.read(ctx, gets...)
	if err != nil {
		return 0, false, fmt.Errorf("read the keys of an unanswered write to see whether it applied: %w", s.wrapEtcd(err))
	}
	var rev int64
	for i, r := range resp.Responses {
		rr := r.GetResponseRange()
		if want[i] == nil {
			if rr.Count != 0 {
				return 0, false, nil
			}
			continue
		}
		if len(rr.Kvs) != 1 || !bytes.Equal(rr.Kvs[0].Value, want[i]) {
			return 0, false, nil
		}
		rev = max(rev, rr.Kvs[0].ModRevision)
	}
	if rev == 0 { // deletes only, all gone
		rev = resp.Header.Revision
	}
	return rev, true, nil
}

// refused reports an error etcd (or the client, before sending) gives a request it never
// proposes: invalid arguments, among them a request over etcd's size or operation limits,
// and a gRPC message over the size either side accepts. Nothing of such a write applied.
func refused(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.InvalidArgument
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return true
	case codes.ResourceExhausted:
		// Not etcd's "database space exceeded" (an EtcdError, above): a gRPC message size.
		return strings.Contains(err.Error(), "larger than max")
	}
	return false
}

// refusal is a refused write's error, with the limit it hit as a sentinel.
func refusal(err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return fmt.Errorf("%w (%v): reshard's limit is above etcd's: pass reshard the limit etcd has, or raise etcd's --max-txn-ops", ErrTooManyOps, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), status.Code(err) == codes.ResourceExhausted:
		return fmt.Errorf("%w (%v): raise etcd's --max-request-bytes, or write less at once", ErrRequestTooLarge, err)
	}
	return fmt.Errorf("etcd refused the write, nothing of it applied: %w", err)
}
