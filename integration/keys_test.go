package integration

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/pgmeta"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/mover"
	"github.com/reshard/reshard/planner"
)

// fkSchema is the classic multi-tenant layout: the tenant table keyed by id, children keyed
// by company_id with composite foreign keys, a table of a mixed-case schema, and a
// reference table that is not sharded. %[1]s is the key type.
const fkSchema = `
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO plans VALUES (1, 'free'), (2, 'pro');
CREATE TABLE companies (id %[1]s PRIMARY KEY, plan_id int NOT NULL REFERENCES plans (id), name text NOT NULL, balance bigint NOT NULL DEFAULT 0);
CREATE TABLE campaigns (company_id %[1]s NOT NULL REFERENCES companies (id), id bigint NOT NULL, name text NOT NULL, PRIMARY KEY (company_id, id));
CREATE TABLE ads (company_id %[1]s NOT NULL, campaign_id bigint NOT NULL, id bigint NOT NULL, body text NOT NULL,
  PRIMARY KEY (company_id, id), FOREIGN KEY (company_id, campaign_id) REFERENCES campaigns (company_id, id));
CREATE SCHEMA "Billing";
CREATE TABLE "Billing"."Invoices" (company_id %[1]s NOT NULL, id bigint NOT NULL, amount bigint NOT NULL, note text,
  PRIMARY KEY (company_id, id), FOREIGN KEY (company_id) REFERENCES companies (id));`

var fkTables = []string{"companies", "campaigns", "ads", "Billing.Invoices"}

// fkChecks count the rows of each foreign key that find no parent on their shard.
var fkChecks = []string{
	`SELECT count(*) FROM companies c WHERE NOT EXISTS (SELECT 1 FROM plans p WHERE p.id = c.plan_id)`,
	`SELECT count(*) FROM campaigns c WHERE NOT EXISTS (SELECT 1 FROM companies p WHERE p.id = c.company_id)`,
	`SELECT count(*) FROM ads a WHERE NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.company_id = a.company_id AND c.id = a.campaign_id)`,
	`SELECT count(*) FROM "Billing"."Invoices" i WHERE NOT EXISTS (SELECT 1 FROM companies p WHERE p.id = i.company_id)`,
}

type fkStack struct {
	t       *testing.T
	ks      catalog.Keyspace
	store   *catalog.Store
	pools   map[string]*pgxpool.Pool
	dsn     map[string]string
	tenants []string // keys as text
	quiet   map[string]bool
	before  map[string]string // tenant/table -> "count hash" on its owner at the start
	nextID  atomic.Int64
}

// tenantKey is tenant i's key: spread bigints, uuids from a hash, or non-ASCII text slugs.
func tenantKey(typ catalog.KeyType, i int) string {
	switch typ {
	case catalog.KeyUUID:
		h := sha256.Sum256([]byte(fmt.Sprint(i)))
		u, _ := catalog.ParseKey(catalog.KeyUUID, fmt.Sprintf("%x", h[:16]))
		return u.String()
	case catalog.KeyText:
		return fmt.Sprintf("société-%02d", i)
	}
	return fmt.Sprint(i*1000 + 7)
}

func newFKStack(t *testing.T, typ catalog.KeyType, dist catalog.Distribution, hot int) *fkStack {
	ctx := context.Background()
	pgs := testenv.Postgres(t, 2)
	srv, cli := testenv.Etcd(t)
	_ = srv
	store, err := catalog.NewStore(cli, "fk")
	if err != nil {
		t.Fatal(err)
	}
	s := &fkStack{t: t, store: store, pools: map[string]*pgxpool.Pool{}, dsn: map[string]string{}, quiet: map[string]bool{}}
	s.nextID.Store(1_000_000)
	cfg := catalog.Config{Cluster: "fk", Key: "company_id", Tables: fkTables, TableKeys: map[string]string{"companies": "id"},
		KeyType: typ, Distribution: dist}
	s.ks = cfg.Keyspace()
	var shards []catalog.Shard
	for i, pg := range pgs {
		name := fmt.Sprintf("s%d", i+1)
		pg.Exec(ctx, fmt.Sprintf(fkSchema, typ))
		s.dsn[name] = pg.DSNApp()
		pool, err := pgxpool.New(ctx, pg.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		s.pools[name] = pool
		shards = append(shards, catalog.Shard{Name: name, DSN: pg.DSNApp()})
	}
	split := int64(0) // hash: s1 holds the negative hashes
	if dist != catalog.DistHash {
		split = 12_000
	}
	ranges := []catalog.Range{{Range: catalog.Below(split), Shard: "s1"}, {Range: catalog.From(split), Shard: "s2"}}
	if err := store.Init(ctx, cfg, shards, ranges, false); err != nil {
		t.Fatal(err)
	}
	st, _ := store.Load(ctx)
	for i := range 24 {
		k := tenantKey(typ, i)
		s.tenants = append(s.tenants, k)
		s.quiet[k] = i%3 == 1
		rows := 2
		if i == hot {
			rows = 20000
		}
		s.seed(ctx, st, k, i, rows)
	}
	s.before = s.fingerprint(ctx)
	return s
}

// owner is the shard that owns tenant k in st.
func (s *fkStack) owner(st *catalog.State, k string) string {
	pos, err := s.ks.PositionOfText(k)
	if err != nil {
		s.t.Fatal(err)
	}
	r, ok := st.Owner(pos)
	if !ok {
		s.t.Fatalf("tenant %s (position %d) is in no range", k, pos)
	}
	return r.Shard
}

// seed writes a tenant: its company, 3 campaigns with 2 ads each, invoices invoices.
func (s *fkStack) seed(ctx context.Context, st *catalog.State, k string, i, invoices int) {
	p := s.pools[s.owner(st, k)]
	tx, err := p.Begin(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit a no-op
	for _, q := range []string{
		`INSERT INTO companies SELECT $1, 1 + $2::int % 2, 'co ' || $2::int, 0 WHERE $3::int > 0`,
		`INSERT INTO campaigns SELECT $1, c, 'campaign ' || c || $2::int FROM generate_series(1, 3) c WHERE $3::int > 0`,
		`INSERT INTO ads SELECT $1, 1 + a % 3, a, repeat('ad ', a::int) || $2::int FROM generate_series(1, 6) a WHERE $3::int > 0`,
		`INSERT INTO "Billing"."Invoices" SELECT $1, n, n * 10, repeat('x', 500) || $2::int FROM generate_series(1, $3::int) n`,
	} {
		if _, err = tx.Exec(ctx, q, k, i, invoices); err != nil {
			break
		}
	}
	if err == nil {
		err = tx.Commit(ctx)
	}
	if err != nil {
		s.t.Fatalf("seed %s: %v", k, err)
	}
}

// fingerprint is every tenant's count and hash of rows per table, on every shard.
func (s *fkStack) fingerprint(ctx context.Context) map[string]string {
	out := map[string]string{}
	for name, p := range s.pools {
		for _, tb := range fkTables {
			rows, err := p.Query(ctx, fmt.Sprintf(`SELECT x.%s::text, count(*), sum(hash_record_extended(x.*, 0))::text FROM %s x GROUP BY 1`,
				`"`+s.ks.Column(tb)+`"`, catalog.QuoteTable(tb)))
			if err != nil {
				s.t.Fatal(err)
			}
			for rows.Next() {
				var k, h string
				var n int64
				if err := rows.Scan(&k, &n, &h); err != nil {
					s.t.Fatal(err)
				}
				out[k+"/"+tb+"/"+name] = fmt.Sprintf("%d %s", n, h)
			}
			rows.Close()
		}
	}
	return out
}

// load writes to the tenants that are not quiet, routing each transaction by the
// resolver and retrying on RS001 or a frozen range: a new campaign with an ad (parent and
// child in one transaction), an invoice and a balance change. acked counts each tenant's
// committed transactions. stop lets each worker finish its transaction (a cancelled one
// would have an unknown outcome).
func (s *fkStack) load(workers int) (stop func() (acked map[string]int, failed []error)) {
	ctx, cancel := context.WithCancel(context.Background())
	var stopping atomic.Bool
	cache, err := s.store.Watch(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	res := catalog.NewResolver(cache)
	var mu sync.Mutex
	acked := map[string]int{}
	var failed []error
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for !stopping.Load() {
				time.Sleep(3 * time.Millisecond)
				k := s.tenants[rng.IntN(len(s.tenants))]
				if s.quiet[k] {
					continue
				}
				err := s.write(ctx, res, k)
				mu.Lock()
				if err == nil {
					acked[k]++
				} else {
					failed = append(failed, err)
				}
				mu.Unlock()
			}
		}()
	}
	return func() (map[string]int, []error) {
		time.Sleep(200 * time.Millisecond)
		stopping.Store(true)
		wg.Wait()
		cancel()
		cache.Close()
		return acked, failed
	}
}

func (s *fkStack) write(ctx context.Context, res *catalog.Resolver, k string) error {
	key, err := catalog.ParseKey(s.ks.KeyType(), k)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		rt, err := res.ResolveKey(key)
		if err != nil {
			return err
		}
		if rt.State == catalog.RangeFrozen {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		id := s.nextID.Add(1)
		_, err = s.pools[rt.Shard].Exec(ctx, `WITH c AS (INSERT INTO campaigns VALUES ($1, $2, 'load') RETURNING company_id, id),
			a AS (INSERT INTO ads SELECT company_id, id, $2, 'load ad' FROM c RETURNING 1),
			i AS (INSERT INTO "Billing"."Invoices" VALUES ($1, $2, 5, 'load') RETURNING 1)
			UPDATE companies SET balance = balance + 5 WHERE id = $1`, k, id)
		if err == nil {
			return nil
		}
		if cutover.IsFenceError(err) && attempt < 10000 {
			time.Sleep(time.Millisecond)
			continue
		}
		return fmt.Errorf("tenant %s on %s: %w", k, rt.Shard, err)
	}
}

func (s *fkStack) executor() *migrate.Executor {
	return moveExecutor(s.t, s.store, mover.Config{Keys: s.ks, Tables: fkTables}, migrate.ExecOptions{CutoverRetries: 3}, slog.LevelWarn)
}

func (s *fkStack) move(ctx context.Context, id string, r catalog.KeyRange, to string) {
	s.t.Helper()
	if _, err := migrate.Carve(ctx, s.store, r); err != nil {
		s.t.Fatalf("carve %s: %v", r, err)
	}
	m, err := s.executor().Move(ctx, migrate.MoveRequest{ID: id, Range: r, Target: to})
	if err != nil || m.Phase != catalog.PhaseDone {
		s.t.Fatalf("move %s %s -> %s: %v %+v", id, r, to, err, m)
	}
	s.t.Logf("%s: %s -> %s: %d rows copied, %d verified", id, r, to, m.RowsCopied, m.RowsVerified)
}

// check: every tenant's rows are on its owner only; a quiet tenant's exactly as at the
// start; a written one's at its start count plus one campaign, ad and invoice per
// acknowledged transaction and its balance at 5 per transaction; every foreign key holds
// on every shard; no reshard slot or publication is left.
func (s *fkStack) check(ctx context.Context, acked map[string]int) {
	t := s.t
	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := s.fingerprint(ctx)
	startOwner := map[string]string{}
	for key := range s.before {
		parts := strings.Split(key, "/")
		startOwner[parts[0]] = parts[len(parts)-1]
	}
	for _, k := range s.tenants {
		own := s.owner(st, k)
		for _, tb := range fkTables {
			for name := range s.pools {
				got := now[k+"/"+tb+"/"+name]
				if name != own {
					if got != "" {
						t.Errorf("tenant %s: %s on %s (not its owner %s): %s", k, tb, name, own, got)
					}
					continue
				}
				start := s.before[k+"/"+tb+"/"+startOwner[k]]
				var n0, n int64
				fmt.Sscan(start, &n0)
				fmt.Sscan(got, &n)
				want := n0
				if tb != "companies" {
					want += int64(acked[k])
				}
				switch {
				case s.quiet[k] && got != start:
					t.Errorf("quiet tenant %s: %s on %s is %q, want %q as at the start", k, tb, name, got, start)
				case n != want:
					t.Errorf("tenant %s: %s on %s has %d rows, want %d (%d at the start + %d acknowledged)", k, tb, name, n, want, n0, acked[k])
				}
			}
		}
		var bal int64
		if err := s.pools[own].QueryRow(ctx, `SELECT balance FROM companies WHERE id = $1`, k).Scan(&bal); err != nil || bal != 5*int64(acked[k]) {
			t.Errorf("tenant %s: balance %d, %v; want %d", k, bal, err, 5*acked[k])
		}
	}
	for name, p := range s.pools {
		for _, q := range fkChecks {
			var n int64
			if err := p.QueryRow(ctx, q).Scan(&n); err != nil || n != 0 {
				t.Errorf("shard %s: %d rows break a foreign key (%v): %s", name, n, err, q)
			}
		}
		var left int64
		if err := p.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'reshard%')
			+ (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'reshard%')`).Scan(&left); err != nil || left != 0 {
			t.Errorf("shard %s: %d reshard slots and publications left (%v)", name, left, err)
		}
	}
}

// TestForeignKeyedSchemaMovesUnderLoad: the tenant table keyed by id, its children keyed by
// company_id with composite foreign keys and a mixed-case table of a non-public schema move
// under a live write load (transactions that insert a parent and its child together),
// for bigint keys by range and for uuid and text keys by hash: ranges whose bounds are hash
// values move, and the planner, fed by stats collect's measurements, isolates a hot uuid
// tenant by its hash, which then moves. Afterwards every tenant's rows are identical
// where they should be and every foreign key holds on every shard.
func TestForeignKeyedSchemaMovesUnderLoad(t *testing.T) {
	cases := []struct {
		name string
		typ  catalog.KeyType
		dist catalog.Distribution
		hot  int
	}{
		{"bigint by range", catalog.KeyBigint, catalog.DistRange, -1},
		{"uuid by hash", catalog.KeyUUID, catalog.DistHash, 4},
		{"text by hash", catalog.KeyText, catalog.DistHash, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := newFKStack(t, tc.typ, tc.dist, tc.hot)
			stop := s.load(3)
			time.Sleep(300 * time.Millisecond)
			if tc.dist == catalog.DistRange {
				s.move(ctx, "part", catalog.NewRange(5_000, 12_000), "s2")
				s.move(ctx, "back", catalog.NewRange(9_000, 12_000), "s1")
			} else {
				s.move(ctx, "hash_part", catalog.NewRange(math.MinInt64/2, 0), "s2") // split at a hash value
				s.move(ctx, "hash_back", catalog.NewRange(math.MinInt64/4, 0), "s1")
			}
			if tc.hot >= 0 {
				s.isolateHot(ctx, s.tenants[tc.hot])
			}
			acked, failed := stop()
			for _, err := range failed {
				t.Errorf("load: %v", err)
			}
			total := 0
			for _, n := range acked {
				total += n
			}
			if total < 20 {
				t.Errorf("only %d transactions acknowledged: the load did not run", total)
			}
			t.Logf("load: %d transactions acknowledged", total)
			s.check(ctx, acked)
		})
	}
}

// isolateHot measures the shards as stats collect does, plans with the default options and
// applies the plan: it must give the hot tenant's hash a range of its own.
func (s *fkStack) isolateHot(ctx context.Context, hot string) {
	t := s.t
	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms, probs := pgmeta.MeasureShards(ctx, st, pgmeta.FleetMeasureOptions{})
	if len(probs) > 0 {
		t.Fatalf("measure: %v", probs)
	}
	stats := catalog.ComputeStats(st, ms, 5, nil)
	plan, err := planner.Compute(st, stats, planner.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	pos, _ := s.ks.PositionOfText(hot)
	isolated := false
	for _, step := range plan.Steps {
		if step.Isolate != nil && *step.Isolate == pos {
			isolated = true
		}
	}
	if !isolated {
		t.Fatalf("the plan does not isolate hot tenant %s (hash %d): %+v", hot, pos, plan.Steps)
	}
	if _, err := s.executor().ApplyPlan(ctx, plan, migrate.ApplyOptions{}); err != nil && !errors.Is(err, migrate.ErrNothingToDo) {
		t.Fatalf("apply: %v", err)
	}
	st, _ = s.store.Load(ctx)
	if r, ok := st.Owner(pos); !ok || !r.Range.Equal(catalog.NewRange(pos, pos+1)) {
		t.Errorf("hot tenant %s (hash %d) is in %v, want a range of its own", hot, pos, r.Range)
	}
}
