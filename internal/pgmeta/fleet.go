package pgmeta

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
)

// ConnectShard opens one session on a catalog shard, its DSN resolved by
// catalog.Shard.ConnString. Errors name the shard and never carry a password.
func ConnectShard(ctx context.Context, sh catalog.Shard) (*pgx.Conn, error) {
	dsn, err := sh.ConnString()
	if err != nil {
		return nil, err
	}
	conn, err := Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", sh.Name, err)
	}
	return conn, nil
}

// CheckShards checks every shard at once, as CheckShard does (reachable, wal_level, each
// table), and lists every problem, prefixed with its shard's name, sorted. A problem found
// on several shards (a schema is usually the same on all) is one line naming them all.
func CheckShards(ctx context.Context, shards []catalog.Shard, keys catalog.Keyspace, tables []string) []string {
	return onShards(ctx, shards, func(ctx context.Context, sh catalog.Shard) []string {
		return checkOne(ctx, sh, keys, tables)
	})
}

// onShards runs f on every shard at once and lists its lines, each prefixed with the
// shards it came from ("shard s1: ", "shards s1, s2: "), sorted.
func onShards(ctx context.Context, shards []catalog.Shard, f func(context.Context, catalog.Shard) []string) []string {
	var mu sync.Mutex
	where := map[string][]string{}
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps := f(ctx, sh)
			mu.Lock()
			for _, p := range ps {
				where[p] = append(where[p], sh.Name)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	var out []string
	for p, names := range where {
		sort.Strings(names)
		if len(names) == 1 {
			out = append(out, "shard "+names[0]+": "+p)
		} else {
			out = append(out, "shards "+strings.Join(names, ", ")+": "+p)
		}
	}
	sort.Strings(out)
	return out
}

// InspectKeyspace reads, on the first shard that answers, the keyspace's key type (that of
// the first table whose key column exists: every other table's must be the same, which
// CheckTable checks) and the tables in foreign key order (ParentsFirst). Without a shard
// that answers it returns "" and the tables as given (CheckShards says why); problem is a
// cycle of foreign keys.
func InspectKeyspace(ctx context.Context, shards []catalog.Shard, keys catalog.Keyspace, tables []string) (kt catalog.KeyType, ordered []string, problem string) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, sh := range shards {
		conn, err := ConnectShard(ctx, sh)
		if err != nil {
			continue
		}
		defer conn.Close(context.WithoutCancel(ctx))
		for _, t := range tables {
			var typ string
			err := conn.QueryRow(ctx, `SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
				WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped`,
				catalog.QuoteTable(t), keys.Column(t)).Scan(&typ)
			if err != nil {
				continue
			}
			if kt, err = catalog.ColumnKeyType(typ); err == nil {
				break
			}
			kt = ""
		}
		ordered, err := ParentsFirst(ctx, conn, tables)
		if err != nil {
			return kt, tables, err.Error()
		}
		return kt, ordered, ""
	}
	return "", tables, ""
}

// ForeignKeyWarnings lists, on every shard, the foreign keys from a table that is not
// sharded into a sharded one (see ForeignKeysInto).
func ForeignKeyWarnings(ctx context.Context, shards []catalog.Shard, tables []string) []string {
	return onShards(ctx, shards, func(ctx context.Context, sh catalog.Shard) []string {
		conn, err := ConnectShard(ctx, sh)
		if err != nil {
			return nil // CheckShards reports it
		}
		defer conn.Close(context.WithoutCancel(ctx))
		ws, err := ForeignKeysInto(ctx, conn, tables)
		if err != nil {
			return []string{fmt.Sprintf("could not look for foreign keys into the sharded tables: %v", err)}
		}
		return ws
	})
}

func checkOne(ctx context.Context, sh catalog.Shard, keys catalog.Keyspace, tables []string) []string {
	dsn, err := sh.ConnString()
	if err != nil {
		return []string{withoutShard(err, sh)}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := Connect(cctx, dsn)
	if err != nil {
		return []string{err.Error() + " (is it running, and is the DSN right?)"}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ps, err := CheckShard(cctx, conn, keys, tables)
	if err != nil {
		return []string{fmt.Sprintf("cannot inspect %s: %v", catalog.MaskDSN(dsn), err)}
	}
	return ps
}

// withoutShard is err's message without the "shard NAME: " the caller adds itself.
func withoutShard(err error, sh catalog.Shard) string {
	return strings.TrimPrefix(err.Error(), "shard "+sh.Name+": ")
}

// FleetMeasureOptions tune MeasureShards.
type FleetMeasureOptions struct {
	// SampleWrites is how long writes are counted from the WAL (SampleWrites); 0: not.
	SampleWrites time.Duration
	// SampleAboveRows: tables above this many rows are sized from a sample (Measure).
	SampleAboveRows int64
}

// MeasureShards measures every shard of st at once, for catalog.ComputeStats: sizes per
// table and tenant and, with SampleWrites, writes per tenant, each shard on two
// connections at the same time. It returns the measurements in shard order, or the
// problems (each prefixed with its shard's name, sorted) of the shards it could not
// measure.
func MeasureShards(ctx context.Context, st *catalog.State, o FleetMeasureOptions) ([]catalog.ShardMeasurement, []string) {
	var mu sync.Mutex
	var out []catalog.ShardMeasurement
	var problems []string
	var wg sync.WaitGroup
	for _, sh := range st.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := measureOne(ctx, sh, st.Config, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				problems = append(problems, "shard "+sh.Name+": "+err.Error())
				return
			}
			out = append(out, *m)
		}()
	}
	wg.Wait()
	sort.Strings(problems)
	sort.Slice(out, func(i, j int) bool { return out[i].Shard < out[j].Shard })
	return out, problems
}

// measureOne sizes one shard and samples its writes at once; the first failure cancels
// the other side.
func measureOne(ctx context.Context, sh catalog.Shard, cfg catalog.Config, o FleetMeasureOptions) (*catalog.ShardMeasurement, error) {
	dsn, err := sh.ConnString()
	if err != nil {
		return nil, errors.New(withoutShard(err, sh))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sizes *Sizes
	var sample *WriteSample
	var sizeErr, sampleErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sizeErr = withConn(ctx, dsn, func(conn *pgx.Conn) (err error) {
			sizes, err = Measure(ctx, conn, cfg.Keyspace(), cfg.Tables, MeasureOptions{SampleAboveRows: o.SampleAboveRows})
			return err
		})
		if sizeErr != nil {
			cancel()
		}
	}()
	if o.SampleWrites > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sampleErr = withConn(ctx, dsn, func(conn *pgx.Conn) (err error) {
				sample, err = SampleWrites(ctx, conn, cfg.Keyspace(), cfg.Tables, o.SampleWrites)
				return err
			})
			if sampleErr != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// The first failure is the cause; the other side only saw the cancellation.
	for _, err := range []error{sizeErr, sampleErr} {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	if err := errors.Join(sizeErr, sampleErr); err != nil {
		return nil, err
	}
	return measurement(sh.Name, sizes, sample), nil
}

// withConn runs fn on a connection of its own to dsn.
func withConn(ctx context.Context, dsn string, fn func(conn *pgx.Conn) error) error {
	conn, err := Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(conn)
}

// measurement is what the catalog keeps of one shard's sizes and write sample.
func measurement(shard string, sizes *Sizes, sample *WriteSample) *catalog.ShardMeasurement {
	m := &catalog.ShardMeasurement{Shard: shard, Tables: map[string]catalog.TableStats{}, Tenants: map[int64]catalog.TenantLoad{}, At: time.Now().UTC()}
	for t, ts := range sizes.Tables {
		m.Tables[t] = catalog.TableStats{Bytes: ts.Bytes, Rows: ts.Rows}
	}
	for k, ts := range sizes.Tenants {
		m.Tenants[k] = catalog.TenantLoad{Tenant: ts.Tenant, Bytes: ts.Bytes, Rows: ts.Rows}
	}
	if sample != nil {
		m.SampleSeconds = sample.Elapsed.Seconds()
		for k, n := range sample.Writes {
			tl := m.Tenants[k]
			tl.Tenant = cmp.Or(tl.Tenant, sample.Tenants[k]) // written during the sample, not there when sized
			tl.Writes = n
			m.Tenants[k] = tl
		}
	}
	return m
}
