package mover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/pgmeta"
	"github.com/reshard/reshard/internal/testenv"
)

// memJournal is an in-memory Journal; records are copied in and out through JSON, as the
// etcd store would.
type memJournal struct {
	mu    sync.Mutex
	recs  map[string][]byte
	saves int
	// onSave, if set, sees every record saved, after the save.
	onSave func(*catalog.Migration)
}

func newMemJournal() *memJournal { return &memJournal{recs: map[string][]byte{}} }

func (j *memJournal) Load(_ context.Context, id string) (*catalog.Migration, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, ok := j.recs[id]
	if !ok {
		return nil, nil
	}
	var m catalog.Migration
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (j *memJournal) Save(_ context.Context, m *catalog.Migration) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	j.mu.Lock()
	j.recs[m.ID] = b
	j.saves++
	hook := j.onSave
	j.mu.Unlock()
	if hook != nil {
		hook(m)
	}
	return nil
}

func (j *memJournal) get(t testing.TB, id string) *catalog.Migration {
	t.Helper()
	m, err := j.Load(context.Background(), id)
	if err != nil || m == nil {
		t.Fatalf("journal: %v, %v", m, err)
	}
	return m
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("MOVER_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// schema is created on source and target by the integration tests: a parent table, a child
// with a foreign key, and a documents table whose rows change tenant (crossing the range
// boundary) and carry large incompressible text.
const schema = `
CREATE TABLE accounts (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	name      text,
	balance   numeric(14,2) NOT NULL DEFAULT 0,
	updated   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, id)
);
CREATE TABLE ledger (
	tenant_id  bigint NOT NULL,
	id         bigint NOT NULL,
	account_id bigint NOT NULL,
	amount     numeric(14,2) NOT NULL,
	memo       text,
	PRIMARY KEY (tenant_id, id),
	FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id)
);
CREATE TABLE docs (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	title     text,
	body      text,
	meta      jsonb,
	PRIMARY KEY (tenant_id, id)
);
CREATE SEQUENCE ids START 1000000;
`

var testTables = []string{"accounts", "ledger", "docs"}

// bigText is incompressible text of n bytes (hex of random bytes), stored out of line.
func bigText(r *rand.Rand, n int) string {
	const hex = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hex[r.IntN(16)]
	}
	return string(b)
}

// seed loads tenants 1..tenants with accounts, ledger rows and documents.
func seed(t testing.TB, ctx context.Context, pool *pgxpool.Pool, tenants, accounts, ledger, docs int) {
	t.Helper()
	_, err := pool.Exec(ctx, `
		INSERT INTO accounts (tenant_id, id, name, balance)
		SELECT t, a, 'acct ' || t || '/' || a, 0 FROM generate_series(1, $1::int) t, generate_series(1, $2::int) a;
		`, tenants, accounts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `
		INSERT INTO ledger (tenant_id, id, account_id, amount, memo)
		SELECT t, l, 1 + l % $2::int, (l % 1000) / 7.0, 'seed ' || l FROM generate_series(1, $1::int) t, generate_series(1, $3::int) l`,
		tenants, accounts, ledger)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `UPDATE accounts a SET balance = s.sum FROM
		(SELECT tenant_id, account_id, sum(amount) AS sum FROM ledger GROUP BY 1, 2) s
		WHERE a.tenant_id = s.tenant_id AND a.id = s.account_id`)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for tn := 1; tn <= tenants; tn++ {
		for d := 1; d <= docs; d++ {
			body := "short"
			if d%3 == 0 {
				body = bigText(r, 3000+r.IntN(5000))
			}
			_, err := pool.Exec(ctx, `INSERT INTO docs (tenant_id, id, title, body, meta) VALUES ($1, nextval('ids'), $2, $3, $4)`,
				tn, fmt.Sprintf("doc %d/%d", tn, d), body, fmt.Sprintf(`{"n": %d, "tags": ["a", "b"]}`, d))
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// writer runs random transactions on the source in all tenants until stopped.
type writer struct {
	pool    *pgxpool.Pool
	tenants int
	txs     atomic.Int64
	moves   atomic.Int64 // documents that changed tenant
	stop    chan struct{}
	wg      sync.WaitGroup
	errs    chan error
}

func startWriter(ctx context.Context, pool *pgxpool.Pool, tenants, goroutines int) *writer {
	w := &writer{pool: pool, tenants: tenants, stop: make(chan struct{}), errs: make(chan error, goroutines)}
	for g := range goroutines {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 99))
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				if err := w.one(ctx, r); err != nil {
					if ctx.Err() != nil {
						return
					}
					if isRetryable(err) {
						continue
					}
					if isConnErr(err) { // the source restarting under the test
						time.Sleep(100 * time.Millisecond)
						continue
					}
					w.errs <- err
					return
				}
				w.txs.Add(1)
			}
		}()
	}
	return w
}

func isRetryable(err error) bool {
	s := err.Error()
	// Two writers touching the same row, or a concurrent key change.
	return strings.Contains(s, "deadlock") || strings.Contains(s, "duplicate key") || strings.Contains(s, "could not serialize") ||
		strings.Contains(s, "violates foreign key")
}

func isConnErr(err error) bool {
	s := err.Error()
	for _, p := range []string{"terminating connection", "connect", "closed", "EOF", "shutting down", "starting up", "broken pipe", "reset by peer"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// close stops the writer unless halt did; for a defer.
func (w *writer) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
		w.wg.Wait()
	}
}

// halt stops the writer and fails the test if it hit an unexpected error.
func (w *writer) halt(t testing.TB) {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	select {
	case err := <-w.errs:
		t.Fatalf("writer: %v", err)
	default:
	}
	t.Logf("writer: %d transactions, %d tenant changes", w.txs.Load(), w.moves.Load())
}

func (w *writer) one(ctx context.Context, r *rand.Rand) error {
	tn := 1 + r.IntN(w.tenants)
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	switch op := r.IntN(12); op {
	case 0, 1, 2: // a ledger entry and its account's balance
		acct := 1 + r.IntN(5)
		amt := float64(r.IntN(100000)) / 100
		if _, err := tx.Exec(ctx, `INSERT INTO ledger (tenant_id, id, account_id, amount, memo) VALUES ($1, nextval('ids'), $2, $3, 'w')`, tn, acct, amt); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $3, updated = now() WHERE tenant_id = $1 AND id = $2`, tn, acct, amt); err != nil {
			return err
		}
	case 3: // delete a ledger entry, fixing the balance
		if _, err := tx.Exec(ctx, `WITH d AS (DELETE FROM ledger WHERE (tenant_id, id) IN
			(SELECT tenant_id, id FROM ledger WHERE tenant_id = $1 ORDER BY random() LIMIT 1) RETURNING tenant_id, account_id, amount)
			UPDATE accounts a SET balance = a.balance - d.amount FROM d WHERE a.tenant_id = d.tenant_id AND a.id = d.account_id`, tn); err != nil {
			return err
		}
	case 4: // rename an account
		if _, err := tx.Exec(ctx, `UPDATE accounts SET name = $3 WHERE tenant_id = $1 AND id = $2`, tn, 1+r.IntN(5), fmt.Sprintf("renamed %d", r.IntN(1000))); err != nil {
			return err
		}
	case 5: // a new document, sometimes large
		body := "small body"
		if r.IntN(3) == 0 {
			body = bigText(r, 2500+r.IntN(4000))
		}
		if _, err := tx.Exec(ctx, `INSERT INTO docs (tenant_id, id, title, body, meta) VALUES ($1, nextval('ids'), 'new', $2, '{"w": true}')`, tn, body); err != nil {
			return err
		}
	case 6: // update a document's title only: a TOASTed body stays unchanged
		n := r.IntN(1000)
		if _, err := tx.Exec(ctx, `UPDATE docs SET title = $2, meta = jsonb_set(coalesce(meta, '{}'), '{r}', to_jsonb($3::int))
			WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM docs WHERE tenant_id = $1 ORDER BY random() LIMIT 1)`, tn, fmt.Sprint("retitled ", n), n); err != nil {
			return err
		}
	case 7: // rewrite a document's body
		if _, err := tx.Exec(ctx, `UPDATE docs SET body = $2 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM docs WHERE tenant_id = $1 ORDER BY random() LIMIT 1)`,
			tn, bigText(r, 2100+r.IntN(3000))); err != nil {
			return err
		}
	case 8: // move a document to another tenant: across the range boundary, body unchanged
		to := 1 + r.IntN(w.tenants)
		tag, err := tx.Exec(ctx, `UPDATE docs SET tenant_id = $2 WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM docs WHERE tenant_id = $1 ORDER BY random() LIMIT 1)`, tn, to)
		if err != nil {
			return err
		}
		w.moves.Add(tag.RowsAffected())
	case 9: // change a document's key within its tenant
		if _, err := tx.Exec(ctx, `UPDATE docs SET id = nextval('ids') WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM docs WHERE tenant_id = $1 ORDER BY random() LIMIT 1)`, tn); err != nil {
			return err
		}
	case 10: // delete a document
		if _, err := tx.Exec(ctx, `DELETE FROM docs WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM docs WHERE tenant_id = $1 ORDER BY random() LIMIT 1)`, tn); err != nil {
			return err
		}
	case 11: // a document moves tenant and is then edited in the same transaction
		to := 1 + r.IntN(w.tenants)
		var id int64
		err := tx.QueryRow(ctx, `UPDATE docs SET tenant_id = $2 WHERE (tenant_id, id) IN
			(SELECT tenant_id, id FROM docs WHERE tenant_id = $1 ORDER BY random() LIMIT 1) RETURNING id`, tn, to).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return tx.Commit(ctx)
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE docs SET title = 'moved' WHERE tenant_id = $1 AND id = $2`, to, id); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// rangeRows returns every row of the range in a table, as text, sorted by primary key.
func rangeRows(t testing.TB, ctx context.Context, pool *pgxpool.Pool, table string, r catalog.KeyRange) []string {
	t.Helper()
	return texts(t, ctx, pool, fmt.Sprintf("SELECT t::text FROM %s t WHERE %s ORDER BY tenant_id, id", table, r.SQL("tenant_id")))
}

// texts returns the rows of a query of one text column.
func texts(t testing.TB, ctx context.Context, pool *pgxpool.Pool, sql string) []string {
	t.Helper()
	rows, err := pool.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// neighbours holds, per target pool, the fingerprint of the other tenants seedNeighbours
// gave it.
var neighbours sync.Map // *pgxpool.Pool -> demo.Fingerprints

// seedNeighbours gives the target other tenants, as a real shard has: a copy of the
// source's rows outside r at this moment (text COPY, so any column type goes). assertSame
// then checks that they are still exactly there, count and hash of every tenant's rows: a
// move of r (its copy, apply or cancel) must never touch them.
func seedNeighbours(t testing.TB, ctx context.Context, src, dst *pgxpool.Pool, tables []string, r catalog.KeyRange) {
	t.Helper()
	for _, tbl := range tables {
		copyRows(t, ctx, src, dst, tbl, "NOT "+r.SQL("tenant_id"))
	}
	f, err := demo.Fingerprint(ctx, dst, tables)
	if err != nil {
		t.Fatal(err)
	}
	if len(f) == 0 {
		t.Fatalf("no rows outside %s to seed the target with", r)
	}
	neighbours.Store(dst, f)
}

// copyRows copies table's rows matching where from src to dst in text COPY.
func copyRows(t testing.TB, ctx context.Context, src, dst *pgxpool.Pool, table, where string) {
	t.Helper()
	sc, err := src.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Release()
	dc, err := dst.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Release()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := sc.Conn().PgConn().CopyTo(ctx, pw, fmt.Sprintf("COPY (SELECT * FROM %s WHERE %s) TO STDOUT", table, where))
		pw.CloseWithError(err)
		done <- err
	}()
	_, err = dc.Conn().PgConn().CopyFrom(ctx, pr, fmt.Sprintf("COPY %s FROM STDIN", table))
	pr.Close()
	if serr := <-done; serr != nil || err != nil {
		t.Fatalf("copy %s rows where %s to the target: source %v, target %v", table, where, serr, err)
	}
}

// assertOthers checks that the target's rows outside r are exactly the neighbours
// seedNeighbours gave it (none if it gave none).
func assertOthers(t testing.TB, ctx context.Context, dst *pgxpool.Pool, tables []string, r catalog.KeyRange) {
	t.Helper()
	got, err := demo.Fingerprint(ctx, dst, tables)
	if err != nil {
		t.Fatal(err)
	}
	want := demo.Fingerprints{}
	if v, ok := neighbours.Load(dst); ok {
		want = v.(demo.Fingerprints).Tables(tables...)
	}
	outside := func(tenant int64) bool { return !r.Contains(tenant) }
	if err := want.Only(outside).Diff("the target", got.Only(outside)); err != nil {
		t.Errorf("other tenants' rows on the target changed: %v", err)
	}
}

// assertSame compares the range's rows of every table on both sides, row by row, and that
// the target's rows outside the range are exactly the neighbours it was seeded with (or
// none).
func assertSame(t testing.TB, ctx context.Context, src, dst *pgxpool.Pool, tables []string, r catalog.KeyRange) {
	t.Helper()
	total := 0
	for _, tbl := range tables {
		a, b := rangeRows(t, ctx, src, tbl, r), rangeRows(t, ctx, dst, tbl, r)
		total += len(a)
		if len(a) != len(b) {
			t.Errorf("%s: %d rows on the source, %d on the target", tbl, len(a), len(b))
		}
		diff := 0
		ai, bi := map[string]bool{}, map[string]bool{}
		for _, x := range a {
			ai[x] = true
		}
		for _, x := range b {
			bi[x] = true
		}
		for _, x := range a {
			if !bi[x] && diff < 5 {
				diff++
				t.Errorf("%s: source row missing or different on the target: %.200s", tbl, x)
			}
		}
		for _, x := range b {
			if !ai[x] && diff < 10 {
				diff++
				t.Errorf("%s: target row not on the source: %.200s", tbl, x)
			}
		}
	}
	assertOthers(t, ctx, dst, tables, r)
	t.Logf("compared %d rows of range %s row by row", total, r)
}

// currentLSN is the source's WAL insert position now: past the commit of every transaction
// committed so far (pg_current_wal_lsn is the write position, which lags asynchronous
// commits).
func currentLSN(t testing.TB, ctx context.Context, pool *pgxpool.Pool) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// leftovers lists the reshard_ slots and publications on a database.
func leftovers(t testing.TB, ctx context.Context, pool *pgxpool.Pool) []string {
	t.Helper()
	return texts(t, ctx, pool, `SELECT 'slot ' || slot_name FROM pg_replication_slots WHERE slot_name LIKE 'reshard\_%'
		UNION ALL SELECT 'publication ' || pubname FROM pg_publication WHERE pubname LIKE 'reshard\_%'`)
}

// assertCancelled checks what a cancel leaves: no reshard_ slot or publication on the
// source, none of the range's rows on the target, and the target's other tenants as
// seedNeighbours left them.
func assertCancelled(t testing.TB, ctx context.Context, src, dst *pgxpool.Pool, tables []string, r catalog.KeyRange) {
	t.Helper()
	if l := leftovers(t, ctx, src); len(l) > 0 {
		t.Fatalf("left on the source after Cancel: %v", l)
	}
	for _, tbl := range tables {
		if n := len(rangeRows(t, ctx, dst, tbl, r)); n != 0 {
			t.Errorf("%s: %d rows of the range left on the target after Cancel", tbl, n)
		}
	}
	assertOthers(t, ctx, dst, tables, r)
}

// startMover makes a mover and starts it (its caller stops it).
func startMover(t testing.TB, ctx context.Context, cfg Config, j Journal) *Mover {
	t.Helper()
	m, err := New(cfg, j)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

// pair starts a source and a target with the schema.
func pair(t *testing.T, ctx context.Context, ddl string) (*testenv.PG, *testenv.PG, *pgxpool.Pool, *pgxpool.Pool) {
	t.Helper()
	pgs := testenv.Postgres(t, 2)
	srcPG, dstPG := pgs[0], pgs[1]
	srcPG.Exec(ctx, ddl)
	dstPG.Exec(ctx, ddl)
	return srcPG, dstPG, srcPG.Pool(ctx), dstPG.Pool(ctx)
}

// seededPair is pair with the test schema, the source seeded (sizes as seed takes them)
// and the target holding the rows either side of rng that no move may touch.
func seededPair(t *testing.T, ctx context.Context, rng catalog.KeyRange, tenants, accounts, ledger, docs int) (srcPG, dstPG *testenv.PG, src, dst *pgxpool.Pool) {
	t.Helper()
	srcPG, dstPG, src, dst = pair(t, ctx, schema)
	seed(t, ctx, src, tenants, accounts, ledger, docs)
	seedNeighbours(t, ctx, src, dst, testTables, rng)
	return srcPG, dstPG, src, dst
}

// moveConfig moves tables' rows in rng from srcPG to dstPG by tenant_id, logging to the
// test; each test sets on it what it exercises (workers, rate, progress).
func moveConfig(t testing.TB, id string, srcPG, dstPG *testenv.PG, tables []string, rng catalog.KeyRange) Config {
	return Config{ID: id, SourceDSN: srcPG.DSNApp(), TargetDSN: dstPG.DSNApp(), Key: "tenant_id",
		Tables: tables, Range: rng, Logger: testLogger(t)}
}

// waitCaughtUp waits until everything written on the source so far is applied.
func waitCaughtUp(t testing.TB, ctx context.Context, m *Mover, src *pgxpool.Pool) {
	t.Helper()
	lsn := currentLSN(t, ctx, src)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := m.WaitApplied(wctx, lsn); err != nil {
		t.Fatalf("WaitApplied(%s): %v (applied %s)", lsn, err, m.AppliedLSN())
	}
	t.Logf("applied up to %s in %v", lsn, time.Since(start).Round(time.Millisecond))
}

// caughtUpAndSame waits until m has applied all the source wrote, fails on m's error, and
// compares testTables' rows in rng on both sides row by row.
func caughtUpAndSame(t testing.TB, ctx context.Context, m *Mover, src, dst *pgxpool.Pool, rng catalog.KeyRange) {
	t.Helper()
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, src, dst, testTables, rng)
}

func newRand(seed int) *rand.Rand { return rand.New(rand.NewPCG(uint64(seed), 7)) }

// smallChunks makes the copy cut even small test tables into several chunks.
func smallChunks(t testing.TB) {
	target, least := chunkTargetBytes, chunkMinBytes
	chunkTargetBytes, chunkMinBytes = 64<<10, 16<<10
	t.Cleanup(func() { chunkTargetBytes, chunkMinBytes = target, least })
}

func testTable() *table {
	return &table{Name: "orders", Schema: "public", Rel: "orders", PK: []string{"tenant_id", "id"}, Columns: []column{
		{Name: "tenant_id", Type: "bigint"}, {Name: "id", Type: "bigint"}, {Name: "note", Type: "text"}, {Name: "total", Type: "numeric(12,2)"},
	}}
}

func txt(s string) col { return col{kind: 't', data: []byte(s)} }

func mustExec(t testing.TB, ctx context.Context, db execer, sql string) {
	t.Helper()
	if _, err := db.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, ctx context.Context, db pgmeta.Querier, sql string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
