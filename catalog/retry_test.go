package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fault is what faultKV does to one write transaction.
type fault int

const (
	pass      fault = iota
	lostReply       // the transaction is applied, but its reply is lost: the outcome is unknown
	notSent         // the connection fails before the request leaves: nothing is applied
)

// faultKV is a real etcd KV that plays a flaky network on write transactions (those that
// put or delete), one fault per write in order; before runs ahead of each faulted one.
type faultKV struct {
	clientv3.KV
	mu     sync.Mutex
	plan   []fault
	before func(n int) // n: index of the write in the plan
	writes int
}

func (f *faultKV) Txn(ctx context.Context) clientv3.Txn {
	return &faultTxn{f: f, ctx: ctx, Txn: f.KV.Txn(ctx)}
}

type faultTxn struct {
	clientv3.Txn
	f     *faultKV
	ctx   context.Context
	write bool
}

func (t *faultTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *faultTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.write = t.write || op.IsPut() || op.IsDelete() || op.IsTxn()
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t *faultTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *faultTxn) Commit() (*clientv3.TxnResponse, error) {
	if !t.write {
		return t.Txn.Commit()
	}
	t.f.mu.Lock()
	n, fl := t.f.writes, pass
	if n < len(t.f.plan) {
		fl = t.f.plan[n]
	}
	t.f.writes++
	before := t.f.before
	t.f.mu.Unlock()
	if fl != pass && before != nil {
		before(n)
	}
	switch fl {
	case notSent:
		return nil, status.Error(codes.Unavailable, "connection error: desc = \"transport is closing\"")
	case lostReply:
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
		return nil, rpctypes.ErrTimeoutDueToConnectionLost
	}
	return t.Txn.Commit()
}

// kinds lists the history as "kind from>to" strings, checking the seqs are 1..n.
func historyKinds(t *testing.T, s *Store) []string {
	t.Helper()
	h, err := s.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(h))
	for i, ev := range h {
		if ev.Seq != int64(i+1) {
			t.Fatalf("history seq %d at position %d: a gap or a duplicate (%+v)", ev.Seq, i+1, h)
		}
		out[i] = ev.Kind
		if ev.From != "" || ev.To != "" {
			out[i] += " " + ev.From + ">" + ev.To
		}
	}
	return out
}

// TestUnknownWriteOutcomeResolvedByReading: a write whose reply is lost, or whose request
// never left, is sent again; when the re-send fails its compares, the store reads whether
// the first send applied (the history entry it appended, or the version of the key it
// compared) and reports success exactly once, or a conflict when another writer won.
func TestUnknownWriteOutcomeResolvedByReading(t *testing.T) {
	tests := []struct {
		name  string
		plan  []fault
		other bool // another writer changes the migration before the faulted write
		write func(ctx context.Context, s *Store, st *State, m *Migration) error
		want  []string // history after init and the migration's creation; nil: unchanged
		err   error
	}{
		{name: "flip reply lost", plan: []fault{lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				if err := s.Freeze(ctx, st, 0, m); err != nil {
					return err
				}
				return s.Flip(ctx, st, 0, m, "s3")
			},
			want: []string{"range_state serving>frozen", "phase catching_up>frozen", "flip s2>s3", "phase frozen>flipped"}},
		{name: "flip reply lost twice", plan: []fault{pass, lostReply, lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				if err := s.Freeze(ctx, st, 0, m); err != nil {
					return err
				}
				return s.Flip(ctx, st, 0, m, "s3")
			},
			want: []string{"range_state serving>frozen", "phase catching_up>frozen", "flip s2>s3", "phase frozen>flipped"}},
		{name: "flip not sent", plan: []fault{notSent, notSent},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				if err := s.Freeze(ctx, st, 0, m); err != nil {
					return err
				}
				return s.Flip(ctx, st, 0, m, "s3")
			},
			want: []string{"range_state serving>frozen", "phase catching_up>frozen", "flip s2>s3", "phase frozen>flipped"}},
		{name: "progress reply lost", plan: []fault{lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				m.RowsCopied = 42
				return s.PutMigration(ctx, m)
			}},
		{name: "phase change reply lost", plan: []fault{lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				m.Phase = PhaseRollingBack
				return s.PutMigration(ctx, m)
			},
			want: []string{"phase catching_up>rolling_back"}},
		{name: "new migration reply lost", plan: []fault{lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				m2 := &Migration{ID: "mv2", Kind: KindMove, Range: st.Ranges[2].Range, Source: "s3", Target: "s1", Phase: PhasePlanned}
				return s.PutMigration(ctx, m2)
			},
			want: []string{"phase >planned"}},
		{name: "split reply lost", plan: []fault{lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				return s.Split(ctx, st, 1000, 1500)
			},
			want: []string{"split"}},
		{name: "add shard reply lost", plan: []fault{lostReply},
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				return s.AddShard(ctx, Shard{Name: "s4", DSN: "host=127.0.0.1 dbname=s4"})
			},
			want: []string{"shard_added"}},
		{name: "another writer appends history before the re-send", plan: []fault{pass, notSent}, other: true,
			write: func(ctx context.Context, s *Store, st *State, m *Migration) error {
				if err := s.Freeze(ctx, st, 0, m); err != nil {
					return err
				}
				return s.Flip(ctx, st, 0, m, "s3")
			},
			want: []string{"range_state serving>frozen", "phase catching_up>frozen", "shard_added", "flip s2>s3", "phase frozen>flipped"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, cli := testStore(t)
			ctx := context.Background()
			st := initDemo(t, s)
			m := newMigration(t, s, "mv1", st.Ranges[1], "s3")
			st, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			fk := &faultKV{KV: cli.KV, plan: tt.plan}
			if tt.other {
				other, err := NewStore(cli, "demo")
				if err != nil {
					t.Fatal(err)
				}
				fk.before = func(int) {
					if err := other.AddShard(ctx, Shard{Name: "s9", DSN: "host=127.0.0.1 dbname=s9"}); err != nil {
						t.Errorf("the other writer: %v", err)
					}
				}
			}
			s.kv = fk
			err = tt.write(ctx, s, st, m)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("write = %v, want %v", err, tt.err)
			}
			want := append([]string{"init", "phase >catching_up"}, tt.want...)
			if got := historyKinds(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("history:\n got %q\nwant %q", got, want)
			}
			after, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// What the write returned is what etcd holds: the next write from it compares right.
			if got := after.Migrations["mv1"]; got.ModRev != m.ModRev || got.Phase != m.Phase || got.RowsCopied != m.RowsCopied {
				t.Errorf("stored migration rev %d phase %s rows %d; the writer holds rev %d phase %s rows %d", got.ModRev, got.Phase, got.RowsCopied, m.ModRev, m.Phase, m.RowsCopied)
			}
			for _, r := range st.Ranges {
				if after.ModRev[RangeKey(r.Range.Lo)] != st.ModRev[RangeKey(r.Range.Lo)] {
					t.Errorf("range %s: stored rev %d, the writer's state has %d", r.Range, after.ModRev[RangeKey(r.Range.Lo)], st.ModRev[RangeKey(r.Range.Lo)])
				}
			}
			if r := after.Ranges[1]; tt.name == "flip reply lost" && (r.Shard != "s3" || r.Epoch != 2) {
				t.Errorf("flipped range: %+v, want s3 at epoch 2 (one flip)", r)
			}
		})
	}
}

// TestLostReplyAndAnotherWriterIsAConflict: when the first send did not apply and another
// writer changed the migration meanwhile, the re-send's failed compare is a conflict: the
// store reads that the stored version is not its own and says so.
func TestLostReplyAndAnotherWriterIsAConflict(t *testing.T) {
	s, cli, _, m := demoMove(t)
	ctx := context.Background()
	other, err := NewStore(cli, "demo")
	if err != nil {
		t.Fatal(err)
	}
	theirs := *m
	fk := &faultKV{KV: cli.KV, plan: []fault{notSent}}
	fk.before = func(int) {
		theirs.AppliedLSN = "0/BEEF"
		if err := other.PutMigration(ctx, &theirs); err != nil {
			t.Errorf("the other writer: %v", err)
		}
	}
	s.kv = fk
	mine := *m
	mine.AppliedLSN = "0/1"
	if err := s.PutMigration(ctx, &mine); !errors.Is(err, ErrConflict) {
		t.Fatalf("write = %v, want ErrConflict", err)
	}
	got, err := s.GetMigration(ctx, "mv1")
	if err != nil || got.AppliedLSN != "0/BEEF" || got.ModRev != theirs.ModRev {
		t.Fatalf("stored %+v (%v), want the other writer's", got, err)
	}
}

// killer kills the cluster's leader and restarts it, again and again, until stop; it
// returns how many kills it did.
func killer(t *testing.T, c interface {
	Leader(context.Context) (int, error)
	Kill(int)
	Restart(context.Context, int) error
}, every time.Duration, stop <-chan struct{}) <-chan int {
	done := make(chan int, 1)
	go func() {
		kills := 0
		defer func() { done <- kills }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * every):
			}
			lead, err := c.Leader(ctx)
			if err != nil {
				t.Errorf("killer: %v", err)
				return
			}
			c.Kill(lead)
			kills++
			time.Sleep(every / 2)
			if err := c.Restart(ctx, lead); err != nil {
				t.Errorf("killer: restart m%d: %v", lead, err)
				return
			}
		}
	}()
	return done
}

// TestCatalogWritesThroughLeaderKills: on a 3-member etcd whose leader is killed and
// restarted over and over, a driver runs migrations to done under their locks (create,
// progress, freeze, flip, cleanup, done) and splits ranges: every write applies exactly once
// (each returns nil; the history is dense, without duplicates, and says exactly what was
// done) and every lock stays held until it is unlocked.
func TestCatalogWritesThroughLeaderKills(t *testing.T) {
	c, s := clusterStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ranges := []Range{{Range: Below(0), Shard: "s1"}, {Range: NewRange(0, 1_000_000), Shard: "s2"}, {Range: From(1_000_000), Shard: "s3"}}
	if err := s.Init(ctx, demoConfig(), demoShards("s1", "s2", "s3"), ranges, false); err != nil {
		t.Fatal(err)
	}
	want := []string{"init"}
	var retries atomic.Int64
	s.onRetry = func(err error) { retries.Add(1); t.Logf("retried: %v", err) }
	stop := make(chan struct{})
	kills := killer(t, c, 1500*time.Millisecond, stop)
	start := time.Now()
	var i int
	for i = 0; i < 6 || time.Since(start) < 20*time.Second; i++ {
		st, err := s.Load(ctx)
		if err != nil {
			t.Fatalf("migration %d: load: %v", i, err)
		}
		r := st.Ranges[1]
		to := map[string]string{"s2": "s3", "s3": "s2"}[r.Shard]
		id := fmt.Sprintf("mv%d", i)
		l, err := s.LockMigration(ctx, id, WithTTL(5))
		if err != nil {
			t.Fatalf("%s: lock: %v", id, err)
		}
		m := &Migration{ID: id, Kind: KindMove, Range: r.Range, Source: r.Shard, Target: to, Phase: PhaseCopying}
		step := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %s: %v", id, what, err)
			}
		}
		step("create", s.PutMigration(ctx, m, HeldBy(l)))
		m.RowsCopied = 1000
		step("progress", s.PutMigration(ctx, m, HeldBy(l)))
		m.Phase = PhaseCatchingUp
		step("catching up", s.PutMigration(ctx, m, HeldBy(l)))
		step("freeze", s.Freeze(ctx, st, r.Range.Lo, m, HeldBy(l)))
		step("flip", s.Flip(ctx, st, r.Range.Lo, m, to, HeldBy(l)))
		m.Phase = PhaseCleaningUp
		step("cleaning up", s.PutMigration(ctx, m, HeldBy(l)))
		m.Phase = PhaseDone
		step("done", s.PutMigration(ctx, m, HeldBy(l)))
		step("lock still held", l.Err())
		step("unlock", l.Unlock(ctx))
		want = append(want, "phase >copying", "phase copying>catching_up", "range_state serving>frozen", "phase catching_up>frozen",
			"flip "+r.Shard+">"+to, "phase frozen>flipped", "phase flipped>cleaning_up", "phase cleaning_up>done")
		if i%2 == 1 {
			last := st.Ranges[len(st.Ranges)-1]
			step("split", s.Split(ctx, st, last.Range.Lo, last.Range.Lo+1000))
			want = append(want, "split")
		}
	}
	close(stop)
	n := <-kills
	if n < 3 {
		t.Fatalf("only %d leader kills during %d migrations: the test did not test much", n, i)
	}
	got := historyKinds(t, s)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history:\n got %q\nwant %q", got, want)
	}
	st := loadValid(t, ctx, s)
	if r := st.Ranges[1]; r.Epoch != int64(i+1) || r.State != RangeServing {
		t.Errorf("moved range %+v: want epoch %d (one per flip), serving", r, i+1)
	}
	if len(st.Ranges) != 3+i/2 {
		t.Errorf("%d ranges, want %d (one per split)", len(st.Ranges), 3+i/2)
	}
	t.Logf("%d migrations and %d splits through %d leader kills, %d calls retried; history of %d events, dense", i, i/2, n, retries.Load(), len(got))
}

// TestLockHeldAcrossLeaderChanges: a held lock whose renewals fail while etcd elects a new
// leader stays held (no ErrLockLost): the new leader keeps the lease alive, and the lock
// renews it as soon as there is one. Guarded writes succeed after each change.
func TestLockHeldAcrossLeaderChanges(t *testing.T) {
	c, s := clusterStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st := initDemo(t, s)
	m := &Migration{ID: "mv1", Kind: KindMove, Range: st.Ranges[1].Range, Source: "s2", Target: "s3", Phase: PhaseCopying}
	l, err := s.LockMigration(ctx, "mv1", WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutMigration(ctx, m, HeldBy(l)); err != nil {
		t.Fatal(err)
	}
	for round := range 6 {
		lead, err := c.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.Kill(lead)
		if _, err := c.Leader(ctx); err != nil {
			t.Fatal(err)
		}
		// Past several renewal periods with the new leader.
		time.Sleep(3 * time.Second)
		if err := l.Err(); err != nil {
			t.Fatalf("round %d: after leader m%d was killed: %v", round, lead, err)
		}
		m.RowsCopied = int64(round)
		if err := s.PutMigration(ctx, m, HeldBy(l)); err != nil {
			t.Fatalf("round %d: guarded write: %v", round, err)
		}
		if err := c.Restart(ctx, lead); err != nil {
			t.Fatal(err)
		}
	}
	if held, err := s.held(ctx, l); err != nil || !held {
		t.Fatalf("lock key after the kills: held %v (%v)", held, err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
