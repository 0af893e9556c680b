package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
)

// Router says where a tenant's rows live now. It is asked before every attempt, so a
// router that follows the catalog sends the retry after a cutover to the new owner.
type Router = RouterOf[int64]

// RouterOf is a Router of tenants with keys of type K.
type RouterOf[K TenantID] interface {
	ShardFor(ctx context.Context, tenant K) (dsn string, err error)
}

// RouterFunc adapts a function to Router.
type RouterFunc = RouterFuncOf[int64]

// RouterFuncOf adapts a function to RouterOf[K].
type RouterFuncOf[K TenantID] func(ctx context.Context, tenant K) (string, error)

// ShardFor calls f.
func (f RouterFuncOf[K]) ShardFor(ctx context.Context, tenant K) (string, error) {
	return f(ctx, tenant)
}

// StaticRouter routes by a fixed set of ranges, for `reshard dev load` and tests that do not
// move anything.
type StaticRouter = StaticRouterOf[int64]

// StaticRouterOf is a StaticRouter of tenants with keys of type K, placed by Position.
type StaticRouterOf[K TenantID] struct {
	st  catalog.State
	dsn map[string]string
}

// NewStaticRouter routes keys by ranges to the DSN of their shard.
func NewStaticRouter(ranges []catalog.Range, dsns map[string]string) (*StaticRouter, error) {
	return NewStaticRouterOf[int64](ranges, dsns)
}

// NewStaticRouterOf is NewStaticRouter for keys of type K.
func NewStaticRouterOf[K TenantID](ranges []catalog.Range, dsns map[string]string) (*StaticRouterOf[K], error) {
	rs := append([]catalog.Range(nil), ranges...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Range.Lo < rs[j].Range.Lo })
	if err := catalog.ValidateRanges(rs, nil); err != nil {
		return nil, fmt.Errorf("demo: static router: %w", err)
	}
	for _, r := range rs {
		if dsns[r.Shard] == "" {
			return nil, fmt.Errorf("demo: static router: no DSN for shard %q of range %s", r.Shard, r.Range)
		}
	}
	return &StaticRouterOf[K]{st: catalog.State{Ranges: rs}, dsn: dsns}, nil
}

// ShardFor returns the DSN of the shard whose range holds tenant.
func (s *StaticRouterOf[K]) ShardFor(_ context.Context, tenant K) (string, error) {
	r, ok := s.st.Owner(Position(tenant))
	if !ok {
		return "", fmt.Errorf("demo: no range holds tenant %v", tenant)
	}
	return s.dsn[r.Shard], nil
}

// transient errors abort a transaction without a trace and are always retried.
func transient(err error) bool {
	return pgerr.Is(err, pgerr.SerializationFailure, pgerr.DeadlockDetected)
}

// Transaction kinds of the load.
const (
	TxNewOrder = "new_order"
	TxLedger   = "ledger"
	TxEvent    = "event"
	TxStatus   = "status"
	TxDelete   = "delete"
)

// DefaultMix is the share of each transaction kind.
var DefaultMix = map[string]int{TxNewOrder: 35, TxLedger: 25, TxEvent: 20, TxStatus: 15, TxDelete: 5}

// LoadOptions configure a Loader.
type LoadOptions = LoadOptionsOf[int64]

// LoadOptionsOf configure a LoaderOf[K].
type LoadOptionsOf[K TenantID] struct {
	Tenants []TenantOf[K] // picked by Weight; required
	Router  RouterOf[K]   // required
	Workers int           // default 4
	// Duration bounds the run; 0 runs until the context is cancelled.
	Duration time.Duration
	// Rate caps transactions per second over all workers; 0 is as fast as possible.
	Rate float64
	// RetryIf says whether an error (from the router or from PostgreSQL) means "not here or
	// not now, ask the router again": the fence error of a cutover, a frozen range. The
	// transaction is retried from routing on. Nil retries nothing but deadlocks and
	// serialization failures.
	RetryIf func(error) bool
	// RetryFor bounds how long one transaction keeps retrying; default 2 minutes.
	RetryFor time.Duration
	// Backoff is the first pause between retries, doubled up to 32 times it; default 5ms.
	Backoff time.Duration
	Mix     map[string]int // default DefaultMix
	Seed    uint64
	// MaxConns caps connections per shard; default Workers+1.
	MaxConns int32
	// Quiet tenants are never written to, so a check afterwards can expect their rows
	// exactly as they were (QuietTenants picks a spread of them).
	Quiet map[K]bool
}

// LedgerWrite is one acknowledged ledger row.
type LedgerWrite = LedgerWriteOf[int64]

// LedgerWriteOf is one acknowledged ledger row of a tenant with a key of type K.
type LedgerWriteOf[K TenantID] struct {
	Tenant K
	ID     int64
	Amount int64 // cents
}

// Counters are the load's running totals. A transaction is attempted once per try; it is
// acknowledged when its COMMIT succeeded. Fenced counts the tries rejected by RetryIf
// errors (then retried); Failed the transactions given up; Unknown those whose COMMIT
// outcome is unknown (the connection broke during it), which are never acknowledged.
type Counters struct {
	Attempts  int64            `json:"attempts"`
	Acked     int64            `json:"acknowledged"`
	Fenced    int64            `json:"fenced_retries"`
	Transient int64            `json:"transient_retries"`
	Failed    int64            `json:"failed"`
	Unknown   int64            `json:"unknown_outcome"`
	ByKind    map[string]int64 `json:"acknowledged_by_kind"`
}

// Result is what a finished run did.
type Result = ResultOf[int64]

// ResultOf is what a finished run on tenants with keys of type K did.
type ResultOf[K TenantID] struct {
	Counters
	Elapsed time.Duration `json:"-"`
	Seconds float64       `json:"seconds"`
	// Ledger holds every acknowledged ledger row, for "present exactly once" checks.
	Ledger []LedgerWriteOf[K] `json:"-"`
	// Changes is what the run did to each tenant's rows, for CompareTenants.
	Changes *ChangesOf[K] `json:"changes"`
	// Errors are a few distinct error messages of failed transactions.
	Errors []string `json:"errors,omitempty"`
}

// Loader runs the write load.
type Loader = LoaderOf[int64]

// LoaderOf runs the write load on tenants with keys of type K.
type LoaderOf[K TenantID] struct {
	opts  LoadOptionsOf[K]
	pick  []K       // the tenants the load writes to (not quiet)
	cum   []float64 // their cumulative weights
	kinds []string
	kcum  []int

	attempts, acked, fenced, trans, failed, unknown atomic.Int64
	byKind                                          sync.Map // kind -> *atomic.Int64

	mu      sync.Mutex
	pools   map[string]*pgxpool.Pool
	errs    map[string]bool
	ledger  [][]LedgerWriteOf[K] // per worker
	changes []*ChangesOf[K]      // per worker
}

// NewLoader checks the options.
func NewLoader[K TenantID](opts LoadOptionsOf[K]) (*LoaderOf[K], error) {
	if len(opts.Tenants) == 0 {
		return nil, errors.New("demo: load: no tenants to write to (generate them with GenerateTenants)")
	}
	if opts.Router == nil {
		return nil, errors.New("demo: load: a Router is required (NewStaticRouter for fixed ranges)")
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	if opts.Workers < 1 || opts.Workers > 1000 {
		return nil, fmt.Errorf("demo: load: %d workers: use 1 to 1000", opts.Workers)
	}
	if opts.Rate < 0 || opts.Duration < 0 {
		return nil, errors.New("demo: load: rate and duration must not be negative")
	}
	if opts.RetryFor == 0 {
		opts.RetryFor = 2 * time.Minute
	}
	if opts.Backoff == 0 {
		opts.Backoff = 5 * time.Millisecond
	}
	if opts.Mix == nil {
		opts.Mix = DefaultMix
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = int32(opts.Workers + 1)
	}
	l := &LoaderOf[K]{opts: opts, pools: map[string]*pgxpool.Pool{}, errs: map[string]bool{}}
	var sum float64
	for _, t := range opts.Tenants {
		if t.Weight < 0 {
			return nil, fmt.Errorf("demo: load: tenant %v has a negative weight", t.ID)
		}
		if opts.Quiet[t.ID] || t.Weight == 0 {
			continue
		}
		sum += t.Weight
		l.pick = append(l.pick, t.ID)
		l.cum = append(l.cum, sum)
	}
	if sum == 0 {
		return nil, errors.New("demo: load: every tenant is quiet or has weight 0: leave some to write to")
	}
	for _, k := range []string{TxNewOrder, TxLedger, TxEvent, TxStatus, TxDelete} {
		w := opts.Mix[k]
		if w < 0 {
			return nil, fmt.Errorf("demo: load: mix weight of %s is negative", k)
		}
		if w == 0 {
			continue
		}
		l.kinds = append(l.kinds, k)
		l.kcum = append(l.kcum, w+lastOr0(l.kcum))
	}
	for k := range opts.Mix {
		if _, ok := DefaultMix[k]; !ok {
			return nil, fmt.Errorf("demo: load: unknown transaction kind %q in mix (use %s, %s, %s, %s, %s)", k, TxNewOrder, TxLedger, TxEvent, TxStatus, TxDelete)
		}
	}
	if len(l.kinds) == 0 {
		return nil, errors.New("demo: load: the mix has no transaction kind with a positive weight")
	}
	return l, nil
}

func lastOr0(s []int) int {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// Load runs a load with opts until the duration ends or ctx is cancelled.
func Load[K TenantID](ctx context.Context, opts LoadOptionsOf[K]) (*ResultOf[K], error) {
	l, err := NewLoader(opts)
	if err != nil {
		return nil, err
	}
	return l.Run(ctx)
}

// Counters returns the running totals; safe to call while Run runs.
func (l *LoaderOf[K]) Counters() Counters {
	c := Counters{
		Attempts: l.attempts.Load(), Acked: l.acked.Load(), Fenced: l.fenced.Load(),
		Transient: l.trans.Load(), Failed: l.failed.Load(), Unknown: l.unknown.Load(),
		ByKind: map[string]int64{},
	}
	l.byKind.Range(func(k, v any) bool {
		c.ByKind[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return c
}

// Run writes until the duration ends or ctx is cancelled, and returns what it did. A
// transaction in flight when the run ends is finished or rolled back, never left open.
func (l *LoaderOf[K]) Run(ctx context.Context) (*ResultOf[K], error) {
	if l.opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opts.Duration)
		defer cancel()
	}
	start := time.Now()
	l.ledger = make([][]LedgerWriteOf[K], l.opts.Workers)
	l.changes = make([]*ChangesOf[K], l.opts.Workers)
	for w := range l.changes {
		l.changes[w] = NewChangesOf[K]()
	}
	var wg sync.WaitGroup
	for w := range l.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, w)
		}()
	}
	wg.Wait()
	l.mu.Lock()
	for _, p := range l.pools {
		p.Close()
	}
	l.pools = map[string]*pgxpool.Pool{}
	res := &ResultOf[K]{Counters: l.Counters(), Elapsed: time.Since(start)}
	res.Seconds = res.Elapsed.Seconds()
	for e := range l.errs {
		res.Errors = append(res.Errors, e)
	}
	l.mu.Unlock()
	sort.Strings(res.Errors)
	for _, lw := range l.ledger {
		res.Ledger = append(res.Ledger, lw...)
	}
	res.Changes = NewChangesOf[K]()
	for t := range l.opts.Quiet {
		res.Changes.Quiet[t] = true
	}
	for _, c := range l.changes {
		res.Changes.Add(c)
	}
	return res, nil
}

func (l *LoaderOf[K]) pool(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.pools[dsn]; ok {
		return p, nil
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("demo: load: bad DSN %s: %w", catalog.MaskDSN(dsn), err)
	}
	cfg.MaxConns = l.opts.MaxConns
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	l.pools[dsn] = p
	return p, nil
}

func (l *LoaderOf[K]) noteError(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs[err.Error()] = true
	}
}

func (l *LoaderOf[K]) pickTenant(rng *rand.Rand) K {
	x := rng.Float64() * l.cum[len(l.cum)-1]
	i := sort.SearchFloat64s(l.cum, x)
	if i == len(l.cum) {
		i--
	}
	return l.pick[i]
}

func (l *LoaderOf[K]) pickKind(rng *rand.Rand) string {
	x := rng.IntN(l.kcum[len(l.kcum)-1])
	return l.kinds[sort.SearchInts(l.kcum, x+1)]
}

func (l *LoaderOf[K]) worker(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(l.opts.Seed, uint64(w)+1))
	var every time.Duration
	if l.opts.Rate > 0 {
		every = time.Duration(float64(time.Second) * float64(l.opts.Workers) / l.opts.Rate)
	}
	next := time.Now()
	for ctx.Err() == nil {
		if every > 0 {
			next = next.Add(every)
			if d := time.Until(next); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			} else if d < -time.Second {
				next = time.Now() // fell behind: don't burst to catch up
			}
		}
		tenant, kind := l.pickTenant(rng), l.pickKind(rng)
		l.runTx(ctx, w, rng, tenant, kind)
	}
}

// runTx runs one logical transaction to acknowledgement or failure, retrying what may be
// retried.
func (l *LoaderOf[K]) runTx(ctx context.Context, w int, rng *rand.Rand, tenant K, kind string) {
	amount := rng.Int64N(20000) - 5000 // cents; a few debits
	if amount == 0 {
		amount = 1
	}
	seed := rng.Uint64()
	deadline := time.Now().Add(l.opts.RetryFor)
	backoff := l.opts.Backoff
	for try := 0; ; try++ {
		if ctx.Err() != nil {
			return
		}
		eff, err := l.try(ctx, tenant, kind, amount, seed)
		if err == nil {
			l.acked.Add(1)
			l.kindCounter(kind).Add(1)
			if eff.ledger != nil {
				l.ledger[w] = append(l.ledger[w], *eff.ledger)
			}
			l.changes[w].note(tenant, eff.rows, false)
			return
		}
		var ue unknownOutcome
		switch {
		case errors.As(err, &ue):
			l.unknown.Add(1)
			l.changes[w].note(tenant, nil, true)
			l.noteError(err)
			return
		case ctx.Err() != nil:
			// Stopped mid-transaction: it rolled back, it was not acknowledged.
			return
		case l.opts.RetryIf != nil && l.opts.RetryIf(err):
			l.fenced.Add(1)
		case transient(err):
			l.trans.Add(1)
		default:
			l.failed.Add(1)
			l.noteError(err)
			return
		}
		if time.Now().After(deadline) {
			l.failed.Add(1)
			l.noteError(fmt.Errorf("gave up after retrying for %s: %w", l.opts.RetryFor, err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 32*l.opts.Backoff)
	}
}

func (l *LoaderOf[K]) kindCounter(kind string) *atomic.Int64 {
	v, _ := l.byKind.LoadOrStore(kind, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// unknownOutcome wraps an error of COMMIT that did not come from the server: the
// transaction may or may not have committed.
type unknownOutcome struct{ err error }

func (u unknownOutcome) Error() string { return "commit outcome unknown: " + u.err.Error() }
func (u unknownOutcome) Unwrap() error { return u.err }

// note records a transaction's effect on a tenant: acknowledged with its row changes, or
// of unknown outcome.
func (c *ChangesOf[K]) note(tenant K, rows Counts, uncertain bool) {
	c.Touched[tenant] = true
	if uncertain {
		c.Uncertain[tenant] = true
		return
	}
	for table, n := range rows {
		if n == 0 {
			continue
		}
		if c.Rows[tenant] == nil {
			c.Rows[tenant] = Counts{}
		}
		c.Rows[tenant][table] += n
	}
}

// effect is what one committed transaction did: its ledger row, and the rows it inserted
// (positive) or deleted (negative) per table, as its statements reported them.
type effect[K TenantID] struct {
	ledger *LedgerWriteOf[K]
	rows   Counts
}

// try is one attempt: route, then one database transaction.
func (l *LoaderOf[K]) try(ctx context.Context, tenant K, kind string, amount int64, seed uint64) (effect[K], error) {
	l.attempts.Add(1)
	var eff effect[K]
	dsn, err := l.opts.Router.ShardFor(ctx, tenant)
	if err != nil {
		return eff, fmt.Errorf("route tenant %v: %w", tenant, err)
	}
	pool, err := l.pool(ctx, dsn)
	if err != nil {
		return eff, err
	}
	// Work on the transaction's own context: a cancelled run must not cut a COMMIT in half
	// and leave its outcome unknown.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	tx, err := pool.Begin(tctx)
	if err != nil {
		return eff, err
	}
	defer tx.Rollback(tctx) //nolint:errcheck // a no-op after Commit
	rng := rand.New(rand.NewPCG(seed, seedOf(tenant)))
	eff.rows = Counts{}
	switch kind {
	case TxNewOrder:
		err = newOrder(tctx, tx, rng, tenant, eff.rows)
	case TxLedger:
		eff.ledger, err = ledgerEntry(tctx, tx, tenant, amount)
		eff.rows["ledger"] = 1
	case TxEvent:
		var tag pgconn.CommandTag
		tag, err = tx.Exec(tctx, `INSERT INTO events (tenant_id, created_at, kind, payload) VALUES ($1, now(), $2, $3)`,
			tenant, "page.view", `{"path": "/p/`+strconv.Itoa(rng.IntN(500))+`", "source": "load"}`)
		eff.rows["events"] = tag.RowsAffected()
	case TxStatus:
		_, err = tx.Exec(tctx, `UPDATE orders SET status = CASE status WHEN 'new' THEN 'paid' ELSE 'shipped' END
			WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM orders WHERE tenant_id = $1 AND status IN ('new', 'paid') ORDER BY id DESC LIMIT 1)`, tenant)
	case TxDelete:
		err = deleteOldest(tctx, tx, tenant, eff.rows)
	}
	if err != nil {
		return eff, err
	}
	if err := tx.Commit(tctx); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return eff, err // the server refused: rolled back, safe to retry
		}
		return eff, unknownOutcome{err}
	}
	return eff, nil
}

// newOrder inserts an order with its items and counts them in rows.
func newOrder[K TenantID](ctx context.Context, tx pgx.Tx, rng *rand.Rand, tenant K, rows Counts) error {
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO orders (tenant_id, status, total) VALUES ($1, 'new', 0) RETURNING id`, tenant).Scan(&id); err != nil {
		return err
	}
	rows["orders"]++
	var total int64
	for range 1 + rng.IntN(4) {
		qty, price := 1+rng.Int64N(5), 100+rng.Int64N(19900)
		total += qty * price
		tag, err := tx.Exec(ctx, `INSERT INTO order_items (tenant_id, order_id, sku, qty, price) VALUES ($1, $2, $3, $4, $5)`,
			tenant, id, fmt.Sprintf("SKU-%05d", rng.IntN(20000)), qty, cents(price))
		if err != nil {
			return err
		}
		rows["order_items"] += tag.RowsAffected()
	}
	_, err := tx.Exec(ctx, `UPDATE orders SET total = $3 WHERE tenant_id = $1 AND id = $2`, tenant, id, cents(total))
	return err
}

// ledgerEntry adds a ledger row and moves the balance by the same amount, keeping the
// invariant balance = sum(ledger.amount).
func ledgerEntry[K TenantID](ctx context.Context, tx pgx.Tx, tenant K, amount int64) (*LedgerWriteOf[K], error) {
	var id int64
	if err := tx.QueryRow(ctx, `INSERT INTO ledger (tenant_id, amount, memo) VALUES ($1, $2, 'load') RETURNING id`, tenant, cents(amount)).Scan(&id); err != nil {
		return nil, err
	}
	tag, err := tx.Exec(ctx, `UPDATE tenants SET balance = balance + $2 WHERE tenant_id = $1`, tenant, cents(amount))
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() != 1 {
		// The router sent us to a shard that does not hold the tenant.
		return nil, fmt.Errorf("%w: tenant %v is not on this shard", ErrWrongShard, tenant)
	}
	return &LedgerWriteOf[K]{Tenant: tenant, ID: id, Amount: amount}, nil
}

// ErrWrongShard is returned when a transaction finds that its shard does not hold the
// tenant: the router is stale or wrong.
var ErrWrongShard = errors.New("wrong shard")

// deleteOldest deletes the tenant's oldest order and its items, and counts them in rows.
func deleteOldest[K TenantID](ctx context.Context, tx pgx.Tx, tenant K, rows Counts) error {
	var id int64
	err := tx.QueryRow(ctx, `DELETE FROM orders WHERE (tenant_id, id) IN
		(SELECT tenant_id, id FROM orders WHERE tenant_id = $1 ORDER BY id LIMIT 1) RETURNING id`, tenant).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	rows["orders"]--
	tag, err := tx.Exec(ctx, `DELETE FROM order_items WHERE tenant_id = $1 AND order_id = $2`, tenant, id)
	rows["order_items"] -= tag.RowsAffected()
	return err
}
