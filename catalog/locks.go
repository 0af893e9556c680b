package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrLocked: the lock is held by another live process. The error wrapping it
// (*LockedError) names the holder.
var ErrLocked = errors.New("locked by another process")

// LockedError says who holds a lock.
type LockedError struct {
	Name   string // what is locked, e.g. "migration mv1"
	Holder string // the holder's description (host and pid), if it wrote one
}

func (e *LockedError) Error() string {
	h := e.Holder
	if h == "" {
		h = "an unknown process"
	}
	return fmt.Sprintf("%s is locked by %s (it is released when that process stops, within its lease TTL)", e.Name, h)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// LockOption tunes a lock or an election.
type LockOption func(*lockOpts)

type lockOpts struct{ ttl int }

// WithTTL sets the lease TTL in seconds (default 10): how long after its process dies a
// lock is released. etcd rounds very small values up to its minimum TTL.
func WithTTL(seconds int) LockOption { return func(o *lockOpts) { o.ttl = seconds } }

// ErrLockLost: this process held a lock but no longer does (its lease expired or was
// revoked, or may have: the process could not renew it in time). Another process may hold
// it now; whatever the lock protected must not be touched any more.
var ErrLockLost = errors.New("the lock was lost (its lease expired): another process may hold it now; stop and re-run")

// Lock is a held lease-based lock. Lost is closed once the lock may have been lost: the
// holder must stop acting on what the lock protects.
//
// "May have been lost" is decided on this process's own clock as well as by etcd: a
// process that was paused (SIGSTOP, a VM freeze, a long GC) past its lease does not learn
// from etcd that it lost the lock until its next round trip, and may act before that. So
// the lock keeps its own conservative deadline: the send time of the last renewal that
// etcd acknowledged plus the TTL etcd granted (etcd starts the TTL when it handles the
// renewal, which is after the send). Past that deadline, minus a margin for clock rate,
// Err reports ErrLockLost whatever etcd would say.
type Lock struct {
	s       *Store
	name    string
	session *concurrency.Session
	mutex   *concurrency.Mutex
	token   int64

	mu       sync.Mutex
	deadline time.Time // the lease is ours until then, by our own clock
	lost     chan struct{}
	lostOnce sync.Once
	stop     context.CancelFunc
}

// Lost is closed when the lock may have been lost (see Lock).
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Err returns nil while the lock is held for certain, and an error wrapping ErrLockLost
// once it may have been lost. Check it right before an action the lock guards that no
// etcd compare can guard (a statement on PostgreSQL).
func (l *Lock) Err() error {
	select {
	case <-l.lost:
		return fmt.Errorf("%s: %w", l.name, ErrLockLost)
	default:
	}
	l.mu.Lock()
	past := !time.Now().Before(l.deadline)
	l.mu.Unlock()
	if past {
		l.markLost()
		return fmt.Errorf("%s: %w", l.name, ErrLockLost)
	}
	return nil
}

// Token is a fencing token: the etcd revision at which this holder's lock key was created.
// Every later holder of the same lock has a greater token, so a resource that remembers the
// greatest token it has seen can refuse a holder that lost the lock to a newer one.
func (l *Lock) Token() int64 { return l.token }

// Context returns a context that ends when parent does or when the lock may have been lost.
func (l *Lock) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		select {
		case <-l.lost:
			cancel(fmt.Errorf("%s: %w", l.name, ErrLockLost))
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

func (l *Lock) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// margin is how much earlier than the computed lease deadline the lock counts as lost: the
// local and etcd's clocks may run at slightly different rates.
func margin(ttl time.Duration) time.Duration { return min(time.Second, ttl/10) }

// renew keeps the lock's own deadline: every third of the TTL it renews the lease once and,
// on success, moves the deadline to the send time plus the TTL etcd granted. A renewal that
// fails for a transient reason (a leader election, the member it went to going away) is
// tried again after a short pause rather than a whole period later: etcd keeps the lease
// alive across a leader change (the new leader grants every lease a full TTL and more), so
// the lock stays held as long as one renewal gets through before the deadline. It ends when
// the lease is gone, the deadline passes, or ctx ends (Unlock).
func (l *Lock) renew(ctx context.Context, cli *clientv3.Client, ttl time.Duration) {
	every := max(ttl/3, 100*time.Millisecond)
	again := min(every, 250*time.Millisecond)
	deadline := time.NewTimer(l.untilDeadline())
	defer deadline.Stop()
	next := time.NewTimer(every)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.session.Done():
			l.markLost()
			return
		case <-deadline.C:
			if l.untilDeadline() <= 0 {
				l.markLost()
				return
			}
			deadline.Reset(l.untilDeadline())
		case <-next.C:
			sent := time.Now()
			// An attempt stuck on a member without a leader must not eat the deadline.
			rctx, cancel := context.WithTimeout(ctx, min(every, max(time.Second, again)))
			resp, err := cli.KeepAliveOnce(rctx, l.session.Lease())
			cancel()
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
				l.markLost()
				return
			case err == nil:
				l.mu.Lock()
				l.deadline = sent.Add(time.Duration(resp.TTL)*time.Second - margin(ttl))
				l.mu.Unlock()
				deadline.Reset(l.untilDeadline())
				next.Reset(every)
			default:
				next.Reset(again)
			}
		}
	}
}

func (l *Lock) untilDeadline() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(time.Until(l.deadline), 0)
}

// Key is the etcd key that holds the lock, for compares (IsOwner).
func (l *Lock) Key() string { return l.mutex.Key() }

// IsOwner is a compare that holds while this lock is held, to guard a write with it.
func (l *Lock) IsOwner() clientv3.Cmp { return l.mutex.IsOwner() }

// Unlock releases the lock and its lease. Both are deletions, so they are retried
// through transient etcd errors (a leader change) without a second thought.
func (l *Lock) Unlock(ctx context.Context) error {
	if l.stop != nil {
		l.stop()
	}
	err := l.s.retryWrite(ctx, l.mutex.Unlock)
	cerr := l.session.Close() // stops the keep-alive, then revokes the lease
	if cerr != nil && transient(cerr) {
		cerr = l.s.retryWrite(ctx, func(ctx context.Context) error {
			_, err := l.s.cli.Revoke(ctx, l.session.Lease())
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return nil // the first revoke did apply
			}
			return err
		})
	}
	if err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unlock %s: %w", l.name, l.s.wrapEtcd(err))
	}
	return nil
}

func (s *Store) newSession(ctx context.Context, opts []LockOption) (*concurrency.Session, time.Duration, error) {
	o := lockOpts{ttl: 10}
	for _, f := range opts {
		f(&o)
	}
	if o.ttl <= 0 {
		return nil, 0, fmt.Errorf("%w: lock TTL %ds: use a positive number of seconds", ErrInvalid, o.ttl)
	}
	// A grant whose answer was lost leaves a lease nobody renews: it expires after the TTL.
	var lease clientv3.LeaseID
	err := s.retryWrite(ctx, func(ctx context.Context) error {
		g, err := s.cli.Grant(ctx, int64(o.ttl))
		if err == nil {
			lease = g.ID
		}
		return err
	})
	var sess *concurrency.Session
	if err == nil {
		sess, err = concurrency.NewSession(s.cli, concurrency.WithLease(lease), concurrency.WithTTL(o.ttl))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("etcd session: %w", s.wrapEtcd(err))
	}
	return sess, time.Duration(o.ttl) * time.Second, nil
}

func (s *Store) migrationLockPrefix(id string) (string, error) {
	if !ValidName(id) {
		return "", fmt.Errorf("%w: migration id %q", ErrInvalid, id)
	}
	return s.key(pfxLocks + "migrations/" + id), nil
}

// LockMigration takes the lock that makes one process the driver of migration id,
// waiting while another holds it (until ctx ends). The lock lives on a lease: if the
// holder dies, it is released after the TTL.
func (s *Store) LockMigration(ctx context.Context, id string, opts ...LockOption) (*Lock, error) {
	pfx, err := s.migrationLockPrefix(id)
	if err != nil {
		return nil, err
	}
	return s.lock(ctx, "migration "+id, pfx, true, opts)
}

// TryLockMigration is LockMigration without waiting: if another process holds the lock it
// returns a *LockedError (errors.Is ErrLocked) naming the holder.
func (s *Store) TryLockMigration(ctx context.Context, id string, opts ...LockOption) (*Lock, error) {
	pfx, err := s.migrationLockPrefix(id)
	if err != nil {
		return nil, err
	}
	return s.lock(ctx, "migration "+id, pfx, false, opts)
}

func (s *Store) lock(ctx context.Context, name, pfx string, wait bool, opts []LockOption) (*Lock, error) {
	sess, ttl, err := s.newSession(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	mu := concurrency.NewMutex(sess, pfx)
	// Taking the mutex again after a transient failure is safe: its key is named after the
	// session's lease, and the mutex takes over the key if the first attempt created it.
	if wait {
		err = s.retry(ctx, mu.Lock) // it waits for the holder: no bound per attempt
	} else {
		err = s.retryWrite(ctx, mu.TryLock)
	}
	if err != nil {
		sess.Close()
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, &LockedError{Name: name, Holder: s.holderOf(ctx, pfx)}
		}
		return nil, fmt.Errorf("lock %s: %w", name, s.wrapEtcd(err))
	}
	// The wait for the lock may have lasted longer than the TTL (the session renewed the
	// lease meanwhile): start the lock's own deadline from a renewal sent now.
	var renewed time.Time
	var ka *clientv3.LeaseKeepAliveResponse
	err = s.retryWrite(ctx, func(ctx context.Context) (err error) {
		renewed = time.Now()
		ka, err = s.cli.KeepAliveOnce(ctx, sess.Lease())
		return err
	})
	if err == nil && ka.TTL <= 0 {
		err = rpctypes.ErrLeaseNotFound
	}
	if err != nil {
		mu.Unlock(context.WithoutCancel(ctx))
		sess.Close()
		return nil, fmt.Errorf("lock %s: renew its lease: %w", name, s.wrapEtcd(err))
	}
	// The mutex key's value is empty; write who we are into it (same lease, same create
	// revision, so the lock order is unchanged) for LockedError and `etcdctl get`, and read
	// its create revision back: the lock's fencing token. Sending it again is harmless: it
	// compares that we own the key and puts the same value.
	var resp *clientv3.TxnResponse
	err = s.retryWrite(ctx, func(ctx context.Context) (err error) {
		resp, err = s.kv.Txn(ctx).If(mu.IsOwner()).Then(clientv3.OpPut(mu.Key(), s.holder, clientv3.WithLease(sess.Lease())), clientv3.OpGet(mu.Key())).Commit()
		return err
	})
	if err == nil && !resp.Succeeded {
		err = fmt.Errorf("the lock key %s vanished right after it was taken (lease expired?)", mu.Key())
	}
	if err != nil {
		mu.Unlock(context.WithoutCancel(ctx))
		sess.Close()
		return nil, fmt.Errorf("lock %s: %w", name, s.wrapEtcd(err))
	}
	l := &Lock{s: s, name: name, session: sess, mutex: mu, lost: make(chan struct{}),
		deadline: renewed.Add(time.Duration(ka.TTL)*time.Second - margin(ttl))}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		l.token = kvs[0].CreateRevision
	}
	rctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go l.renew(rctx, s.cli, ttl)
	return l, nil
}

// held reports, by asking etcd, whether l's lock key still exists with l's token: what
// l.IsOwner compares. A guarded write that failed its compares asks it to tell a lost
// lock from an ordinary conflict.
func (s *Store) held(ctx context.Context, l *Lock) (bool, error) {
	resp, err := s.get(ctx, l.Key())
	if err != nil {
		return false, s.wrapEtcd(err)
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == l.token, nil
}

// holderOf reads the value of the oldest key under pfx: the lock holder's description.
func (s *Store) holderOf(ctx context.Context, pfx string) string {
	resp, err := s.get(ctx, pfx+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// Leader is a won election. Lost is closed if the lease is lost: stop acting as leader.
type Leader struct {
	name     string
	session  *concurrency.Session
	election *concurrency.Election
}

// Lost is closed when leadership's lease has expired or been revoked.
func (l *Leader) Lost() <-chan struct{} { return l.session.Done() }

// Resign gives up leadership so another campaigner can win at once.
func (l *Leader) Resign(ctx context.Context) error {
	err := l.election.Resign(ctx)
	l.session.Close()
	if err != nil {
		return fmt.Errorf("resign %s: %w", l.name, err)
	}
	return nil
}

// Campaign waits until this process is the leader of election name (e.g. "scheduler")
// among all processes of the cluster, or ctx ends. Leadership lives on a lease: if the
// leader dies another campaigner wins after the TTL.
func (s *Store) Campaign(ctx context.Context, name string, opts ...LockOption) (*Leader, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: election name %q", ErrInvalid, name)
	}
	sess, _, err := s.newSession(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("campaign %s: %w", name, err)
	}
	el := concurrency.NewElection(sess, s.key(pfxLocks+"elections/"+name))
	if err := el.Campaign(ctx, s.holder); err != nil {
		sess.Close()
		return nil, fmt.Errorf("campaign %s: %w", name, s.wrapEtcd(err))
	}
	return &Leader{name: name, session: sess, election: el}, nil
}

// LeaderOf returns the holder description of the current leader of election name, or ""
// if there is none.
func (s *Store) LeaderOf(ctx context.Context, name string) (string, error) {
	resp, err := s.get(ctx, s.key(pfxLocks+"elections/"+name+"/"), clientv3.WithFirstCreate()...)
	if err != nil {
		return "", s.wrapEtcd(err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// MigrationLockHolder reports whether a driver holds migration id's lock, and who (the
// description it wrote; "" for a moment after it took the lock). It only reads: a
// migration no process holds is one nobody is running.
func (s *Store) MigrationLockHolder(ctx context.Context, id string) (holder string, held bool, err error) {
	pfx, err := s.migrationLockPrefix(id)
	if err != nil {
		return "", false, err
	}
	resp, err := s.get(ctx, pfx+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", false, fmt.Errorf("read the lock of migration %s: %w", id, s.wrapEtcd(err))
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}
