package cutover

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/reshard/reshard/catalog"
)

// Catalog is what a cutover needs of the catalog store (*catalog.Store implements it).
type Catalog interface {
	Load(ctx context.Context) (*catalog.State, error)
	// LoadRange reads only the range starting at lo and the named shards: what the
	// freeze, the flip and an undo compare, in a few keys however big the catalog is.
	LoadRange(ctx context.Context, lo int64, shards ...string) (*catalog.State, error)
	GetMigration(ctx context.Context, id string) (*catalog.Migration, error)
	PutMigration(ctx context.Context, m *catalog.Migration, opts ...catalog.WriteOption) error
	Freeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error
	Unfreeze(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, opts ...catalog.WriteOption) error
	Flip(ctx context.Context, st *catalog.State, lo int64, m *catalog.Migration, newShard string, opts ...catalog.WriteOption) error
}

// Replicator is what a cutover needs of the mover that keeps the target caught up: wait
// until it has applied the fence LSN, and stop it after the flip.
type Replicator interface {
	WaitApplied(ctx context.Context, lsn pglogrepl.LSN) error
	Stop(ctx context.Context) error
}

// Lease is a driver's hold on its migration (*catalog.Lock implements it).
type Lease interface {
	// Err is non-nil once the lease may have been lost: checked right before each
	// statement on PostgreSQL that no etcd compare can guard.
	Err() error
	// Token is the driver's fencing token, written into the fence rows it sets.
	Token() int64
}

// Options tune a cutover.
type Options struct {
	// StragglerTimeout bounds the wait for transactions older than the fence (default 5s).
	StragglerTimeout time.Duration
	// KillStragglers terminates them past the bound instead of rolling back.
	KillStragglers bool
	// CatchupTimeout bounds the wait until the fence LSN is applied (default 30s).
	CatchupTimeout time.Duration
	// SkipVerify turns off the count-and-hash comparison (on by default).
	SkipVerify bool
	// Now is the clock (tests); default time.Now. It must be safe for concurrent use.
	Now func() time.Time
	// VerifyConns is how many connections per shard the verify hashes the tables on at
	// once, one statement each (default 4; at most one per table). They are opened before
	// the freeze, with the control connection's settings; the control connections sync
	// the sequences meanwhile. Even a small range gains: on a busy shard the wait for CPU,
	// not the hashing, is most of a statement's time, and the waits overlap.
	VerifyConns int
	// MaxWindow is the longest window the cutover predicts before it freezes (default
	// 500ms): over it, it keeps catching up, at most CatchupTimeout (ErrWindowTooLong).
	MaxWindow time.Duration
	// Online tunes the online verification before the freeze (chunk size, differing
	// keys written to a file, progress), run when the mover is an ApplyHolder.
	Online OnlineOptions
	// AfterStep, if set, is called after each step of the window with its name (freeze,
	// fence, drain, catch up, verify, sequences, flip, open), in that order, from
	// Run's goroutine, then after "stop apply", which ends after the flip. The fault tests
	// use it to kill the driver at a chosen point.
	AfterStep func(step string)
}

func (o *Options) defaults() {
	if o.StragglerTimeout <= 0 {
		o.StragglerTimeout = 5 * time.Second
	}
	if o.CatchupTimeout <= 0 {
		o.CatchupTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.VerifyConns <= 0 {
		o.VerifyConns = 4
	}
	if o.MaxWindow <= 0 {
		o.MaxWindow = 500 * time.Millisecond
	}
}

// Env is everything one cutover works on.
type Env struct {
	// Catalog takes the migration's writes; migrate.Executor's compares its lock in each.
	Catalog Catalog
	Mover   Replicator
	Source  Conn             // reshard's control connection to the source shard
	Target  Conn             // and to the target
	Key     string           // the key column, when Keys names none
	Keys    catalog.Keyspace // each table's key column, the key type, the distribution
	Tables  []string
	Log     *slog.Logger // nil: no log
	// Lease is the driver's lock on the migration; nil (tests that run a cutover
	// directly) checks nothing and writes token 0.
	Lease Lease
}

// Keyspace is Keys, with Key as its key column when Keys names none.
func (env Env) Keyspace() catalog.Keyspace { return env.Keys.OrKey(env.Key) }

// MayWrite is checked right before a statement that changes a shard on the migration's
// behalf: a driver whose lock may have been lost must not act on what it read before.
func (env Env) MayWrite() error {
	if env.Lease == nil {
		return nil
	}
	return env.Lease.Err()
}

// Token is the fencing token the driver writes into the fence rows it sets (0 without a
// lease).
func (env Env) Token() int64 {
	if env.Lease == nil {
		return 0
	}
	return env.Lease.Token()
}

// Result is what a finished cutover reports.
type Result struct {
	// Window is frozen -> flipped and open on the target: the range's write-unavailability
	// window as a client sees it.
	Window     time.Duration
	FenceLSN   pglogrepl.LSN
	Rows       int64 // rows verified
	Stragglers []Straggler
	Sequences  []Sequence
	// CatchupBefore is the catch-up to the source's present right before the freeze
	// (outside the window).
	CatchupBefore time.Duration
	// Online is the online verification before the freeze (nil without one: then the
	// window hashed the whole range). WindowRows is the rows the window compared: those
	// the apply changed since the online verification's position (ChangedSince row
	// changes), or the whole range without one.
	Online       *OnlineVerification
	WindowRows   int64
	ChangedSince int64
	// Predicted is the window predicted right before the freeze (zero without a
	// Predictor).
	Predicted Prediction
	// Steps are the durations of the steps inside the window, in order, to see where the
	// window goes, then of stop apply, which starts with the verify and ends after the
	// flip. Steps overlap: the sequences and the source half of the verify run during the
	// catch-up, so the verify counts from the end of the catch-up, and the steps can add
	// up to more than the window.
	Steps []StepTiming
}

// StepTiming is how long one cutover step took.
type StepTiming struct {
	Step     string        `json:"step"`
	Duration time.Duration `json:"duration"`
}

// ErrAmbiguous is returned when the flip's outcome is unknown (etcd did not answer). The
// fence stays in place, so no write can be lost; a re-run reads the journal and either
// finishes or rolls back.
var ErrAmbiguous = errors.New("the ownership flip may or may not have committed")

// Run performs steps 1-8 of the cutover for migration m, whose mover is caught up. On any
// failure before the flip it undoes the cutover (fence removed, range serving on the
// source, migration catching up again) and returns the cause; the copy and its slot are
// kept, so the caller (migrate.Executor) either retries or rolls the migration back. After
// the flip it returns nil and the caller finishes the migration (its cleanup).
//
// The window (freeze to flip) is kept short without dropping a check or moving one past
// the flip. Before the freeze, outside the window: extra connections for the verify are
// opened, and the mover is brought up to the source's present (catchUpBefore). Inside,
// what does not depend on each other runs in parallel: once the drain is over the source's
// rows of the range are final, so while the mover catches up to the fence LSN the source
// half of the verify, the sequences and the journal write run; once it has caught up, the
// target half of the verify runs. The mover stops after the flip, before Run returns.
// Statements in the window take one round trip each.
func Run(ctx context.Context, env Env, m *catalog.Migration, opts Options) (Result, error) {
	opts.defaults()
	w := &window{ctx: ctx, env: env, m: m, r: m.Range, opts: opts}
	defer w.closeLanes()
	// Before the window: the verify's lanes opened and warmed, the mover caught up.
	st, err := w.prepare()
	if err != nil {
		return w.res, err
	}
	// 1. Freeze. From here until the flip, the range takes no writes.
	if err := w.freeze(st); err != nil {
		return w.res, err
	}
	// 2. Fence.
	if err := w.fence(); err != nil {
		return w.fail("fence", err)
	}
	// 3. Drain transactions that may not see the fence.
	if err := w.drain(); err != nil {
		return w.fail("drain", err)
	}
	// 4. Catch up to the fence LSN; the journal, the sequences and the source half of the
	// verify run meanwhile.
	if step, err := w.catchUp(); err != nil {
		return w.fail(step, err)
	}
	// 5. Verify; everything that ran beside the catch-up is joined.
	if step, err := w.verify(); err != nil {
		return w.fail(step, err)
	}
	// 6. Sequences: done during the catch-up; their time is recorded here.
	w.sequences()
	// 7. Flip: the commit point.
	if err := w.flip(); err != nil {
		return w.res, err
	}
	// 8. Open the range on the target; stop the apply.
	w.open()
	return w.res, nil
}
