package catalog

import (
	"context"
	"errors"
	"fmt"

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

// Lock is a held lease-based lock. Lost is closed if the lease is lost (etcd unreachable
// for longer than the TTL): the holder must stop acting on what the lock protects.
type Lock struct {
	name    string
	session *concurrency.Session
	mutex   *concurrency.Mutex
}

// Lost is closed when the lock's lease has expired or been revoked.
func (l *Lock) Lost() <-chan struct{} { return l.session.Done() }

// Key is the etcd key that holds the lock, for compares (IsOwner).
func (l *Lock) Key() string { return l.mutex.Key() }

// IsOwner is a compare that holds while this lock is held, to guard a write with it.
func (l *Lock) IsOwner() clientv3.Cmp { return l.mutex.IsOwner() }

// Unlock releases the lock and its lease.
func (l *Lock) Unlock(ctx context.Context) error {
	err := l.mutex.Unlock(ctx)
	if cerr := l.session.Close(); err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unlock %s: %w", l.name, err)
	}
	return nil
}

func (s *Store) newSession(opts []LockOption) (*concurrency.Session, error) {
	o := lockOpts{ttl: 10}
	for _, f := range opts {
		f(&o)
	}
	if o.ttl <= 0 {
		return nil, fmt.Errorf("%w: lock TTL %ds: use a positive number of seconds", ErrInvalid, o.ttl)
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(o.ttl))
	if err != nil {
		return nil, fmt.Errorf("etcd session: %w", s.wrapEtcd(err))
	}
	return sess, nil
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
	sess, err := s.newSession(opts)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	mu := concurrency.NewMutex(sess, pfx)
	if wait {
		err = mu.Lock(ctx)
	} else {
		err = mu.TryLock(ctx)
	}
	if err != nil {
		sess.Close()
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, &LockedError{Name: name, Holder: s.holderOf(ctx, pfx)}
		}
		return nil, fmt.Errorf("lock %s: %w", name, s.wrapEtcd(err))
	}
	// The mutex key's value is empty; write who we are into it (same lease, same create
	// revision, so the lock order is unchanged) for LockedError and `etcdctl get`.
	if _, err := s.cli.Txn(ctx).If(mu.IsOwner()).Then(clientv3.OpPut(mu.Key(), s.holder, clientv3.WithLease(sess.Lease()))).Commit(); err != nil {
		mu.Unlock(context.WithoutCancel(ctx))
		sess.Close()
		return nil, fmt.Errorf("lock %s: %w", name, s.wrapEtcd(err))
	}
	return &Lock{name: name, session: sess, mutex: mu}, nil
}

// holderOf reads the value of the oldest key under pfx: the lock holder's description.
func (s *Store) holderOf(ctx context.Context, pfx string) string {
	resp, err := s.cli.Get(ctx, pfx+"/", clientv3.WithFirstCreate()...)
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
	sess, err := s.newSession(opts)
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
	resp, err := s.cli.Get(ctx, s.key(pfxLocks+"elections/"+name+"/"), clientv3.WithFirstCreate()...)
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
	resp, err := s.cli.Get(ctx, pfx+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", false, fmt.Errorf("read the lock of migration %s: %w", id, s.wrapEtcd(err))
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}
