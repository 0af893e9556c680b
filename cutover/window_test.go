package cutover

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestDrainReadsFenceTime: with no fence time given, the drain's first poll takes its own
// start as the cutoff, and still waits for a REPEATABLE READ transaction whose snapshot
// predates it.
func TestDrainReadsFenceTime(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema)
	db, old := connect(t, pg.DSNApp()), connect(t, pg.DSNApp())
	tx, err := old.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	type out struct {
		at  time.Time
		err error
	}
	done := make(chan out, 1)
	go func() {
		at, _, err := drain(ctx, db, time.Time{}, 10*time.Second, false)
		done <- out{at, err}
	}()
	select {
	case o := <-done:
		t.Fatalf("drain returned (%v) while a transaction older than the fence runs", o.err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.at.Before(before.Add(-time.Second)) || o.at.After(time.Now().Add(time.Second)) {
		t.Errorf("cutoff %v is not the first poll's time (around %v)", o.at, before)
	}
	// And a bound still ends the wait with ErrStragglers.
	tx2, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback(ctx) //nolint:errcheck
	if _, err := tx2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := drain(ctx, db, time.Time{}, 50*time.Millisecond, false); !errors.Is(err, ErrStragglers) {
		t.Fatalf("drain past its bound = %v, want ErrStragglers", err)
	}
}

// TestDrainPreparedAfterFence: a transaction that started before the fence and PREPAREs
// after it leaves pg_stat_activity, and shows in pg_prepared_xacts with a prepare time past
// the fence; its writes land at COMMIT PREPARED, so the drain must wait for that.
func TestDrainPreparedAfterFence(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, `ALTER SYSTEM SET max_prepared_transactions = 4`)
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pg.Exec(ctx, schema)
	db, old, other := connect(t, pg.DSNApp()), connect(t, pg.DSNApp()), connect(t, pg.DSNApp())
	tx, err := old.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenants VALUES (11, 'before the fence')`); err != nil {
		t.Fatal(err)
	}
	at, err := fenceTime(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := drain(ctx, db, at, 10*time.Second, false)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := tx.Exec(ctx, `PREPARE TRANSACTION 'straggler'`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("drain returned (%v) while a transaction older than the fence is prepared", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := other.Exec(ctx, `COMMIT PREPARED 'straggler'`); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestMarkerFlushed: the marker is flushed when it returns, even on a server whose
// synchronous_commit is off (as the test clusters are), so a WAL sender can decode it.
func TestMarkerFlushed(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	db := connect(t, pg.DSNApp())
	for i := range 5 {
		lsn, err := FenceLSN(ctx, db, fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := db.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		flushed, _ := pglogrepl.ParseLSN(s)
		if flushed < lsn {
			t.Fatalf("marker at %s, WAL flushed to %s only", lsn, flushed)
		}
	}
}

// TestDigestsLanes: the digests are the same whether a shard's tables are hashed in one
// statement, or shared out among several connections, or one statement per table; a
// column type without a hash function (json) falls back to hashing through text.
func TestDigestsLanes(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t, 1)[0]
	pg.Exec(ctx, schema+`
		CREATE TABLE docs (tenant_id bigint, body json);
		INSERT INTO tenants SELECT g, 't' || g FROM generate_series(0, 29) g;
		INSERT INTO orders (tenant_id, total, note) SELECT g % 30, g, jsonb_build_object('g', g) FROM generate_series(1, 900) g;
		INSERT INTO docs SELECT g % 30, json_build_object('g', g) FROM generate_series(1, 90) g;`)
	conns := []Querier{connect(t, pg.DSNApp()), connect(t, pg.DSNApp()), connect(t, pg.DSNApp())}
	r := catalog.NewRange(10, 20)
	cols, err := ReadColumns(ctx, conns[0], []string{"tenants", "orders", "docs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tables := range [][]string{{"tenants", "orders"}, {"tenants", "orders", "docs"}} {
		var want []TableDigest
		for _, tb := range tables {
			d, err := Digest(ctx, conns[0], tb, "tenant_id", cols[tb], r)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, d)
		}
		for lanes := 1; lanes <= len(conns); lanes++ {
			t.Run(fmt.Sprintf("%d tables on %d connections", len(tables), lanes), func(t *testing.T) {
				got, err := digests(ctx, conns[:lanes], "tenant_id", tables, cols, r)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if got[i].Table != want[i].Table || got[i].Rows != want[i].Rows || got[i].Hash != want[i].Hash {
						t.Errorf("table %d: %+v, want %+v", i, got[i], want[i])
					}
				}
				warmDigests(ctx, conns[:lanes], "tenant_id", tables, cols, r) // must not break a connection
			})
		}
	}
	if _, err := Verify(ctx, conns[0], conns[1], "tenant_id", []string{"tenants", "orders", "docs"}, r); err != nil {
		t.Fatalf("Verify of a shard with itself: %v", err)
	}
}

// TestSyncSequencesRaisesOnly: a target sequence behind the source's is raised to it; one
// ahead is left where it is.
func TestSyncSequencesRaisesOnly(t *testing.T) {
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	src, dst := connect(t, pgs[0].DSNApp()), connect(t, pgs[1].DSNApp())
	for _, p := range pgs {
		p.Exec(ctx, schema)
	}
	tables := []string{"tenants", "orders"}
	for _, tt := range []struct {
		src, dst, want int64
	}{
		{src: 500, dst: 0, want: 500},
		{src: 500, dst: 100, want: 500},
		{src: 500, dst: 900, want: 900},
	} {
		pgs[0].Exec(ctx, fmt.Sprintf(`SELECT setval('orders_id_seq', %d)`, tt.src))
		if tt.dst > 0 {
			pgs[1].Exec(ctx, fmt.Sprintf(`SELECT setval('orders_id_seq', %d)`, tt.dst))
		} else {
			pgs[1].Exec(ctx, `ALTER SEQUENCE orders_id_seq RESTART`)
		}
		seqs, err := SyncSequences(ctx, src, dst, tables)
		if err != nil || len(seqs) != 1 || seqs[0].Value != tt.want {
			t.Errorf("source %d, target %d: SyncSequences = %+v, %v; want %d", tt.src, tt.dst, seqs, err, tt.want)
		}
		var next int64
		if err := dst.QueryRow(ctx, `SELECT nextval('orders_id_seq')`).Scan(&next); err != nil || next != tt.want+1 {
			t.Errorf("source %d, target %d: next id on the target %d, %v; want %d", tt.src, tt.dst, next, err, tt.want+1)
		}
	}
}
