package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
)

// Fingerprint is what Save took: the file, and per shard its tenants and rows.
type Fingerprint struct {
	Taken  time.Time
	File   string // absolute
	Shards []ShardRows
}

// ShardRows counts one shard's tenants and rows in a fingerprint.
type ShardRows struct {
	Name    string
	Tenants int
	Rows    int64
}

// Save fingerprints every tenant's rows on every shard of the stack at --dir dirFlag into
// <dir>/fingerprint.json and forgets earlier load records. It refuses while a load runs: a
// fingerprint is taken while nothing writes.
func Save(ctx context.Context, dirFlag string) (*Fingerprint, error) {
	st, err := readyState(dirFlag)
	if err != nil {
		return nil, err
	}
	if running := runningLoads(st.Dir); len(running) > 0 {
		return nil, fmt.Errorf("a load is running (pid %s): stop it first, a fingerprint must be taken while nothing writes", strings.Join(running, ", "))
	}
	if st.Data.Hashed() {
		return save[demo.UUID](ctx, st)
	}
	return save[int64](ctx, st)
}

func save[K demo.TenantID](ctx context.Context, st *State) (*Fingerprint, error) {
	qs, closeAll, err := connect(ctx, st)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	base := demo.BaselineOf[K]{Taken: time.Now().UTC(), Tables: demo.Tables}
	if base.Snapshot, err = demo.TakeSnapshotOf[K](ctx, qs, demo.Tables); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(st.Dir, LoadsDir)); err != nil {
		return nil, err
	}
	fp := &Fingerprint{Taken: base.Taken, File: filepath.Join(st.Dir, BaselineFile)}
	if err := writeJSONFile(fp.File, base); err != nil {
		return nil, err
	}
	for _, s := range st.Shards {
		sr := ShardRows{Name: s.Name, Tenants: len(base.Snapshot[s.Name])}
		for _, tables := range base.Snapshot[s.Name] {
			for _, f := range tables {
				sr.Rows += f.Rows
			}
		}
		fp.Shards = append(fp.Shards, sr)
	}
	return fp, nil
}

// CheckResult is what Check compared: the fingerprint's time, where owners came from, and
// the report of every tenant on every shard.
type CheckResult struct {
	Taken  time.Time
	Owners string // "the catalog", or "the ranges the stack was created with"
	Report *demo.StackReport
}

// Check compares every tenant's rows on every shard of the stack at --dir dirFlag with the
// fingerprint and what the loads since did (demo.CheckStack). The result is nil when the
// check could not run; the error, with a result, lists what differs.
func Check(ctx context.Context, dirFlag string) (*CheckResult, error) {
	st, err := readyState(dirFlag)
	if err != nil {
		return nil, err
	}
	if st.Data.Hashed() {
		return check[demo.UUID](ctx, st, dirFlag)
	}
	return check[int64](ctx, st, dirFlag)
}

func check[K demo.TenantID](ctx context.Context, st *State, dirFlag string) (*CheckResult, error) {
	var base demo.BaselineOf[K]
	if err := readJSONFile(filepath.Join(st.Dir, BaselineFile), &base); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no fingerprint in %s: run `reshard dev check --save` before the load and the moves", dirFlag)
	} else if err != nil {
		return nil, err
	}
	if running := runningLoads(st.Dir); len(running) > 0 {
		return nil, fmt.Errorf("a load is still running (pid %s): stop it first (its writes are not all known yet)", strings.Join(running, ", "))
	}
	loads, err := readLoads[K](st.Dir)
	if err != nil {
		return nil, err
	}
	owner, how, err := owners[K](ctx, st)
	if err != nil {
		return nil, err
	}
	qs, closeAll, err := connect(ctx, st)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	rep, cerr := demo.CheckStack(ctx, qs, owner, &base, loads)
	if rep == nil {
		return nil, cerr
	}
	return &CheckResult{Taken: base.Taken, Owners: how, Report: rep}, cerr
}

// owners says which shard owns a tenant (by its Position): the catalog's, or the ranges the
// stack was made with before `reshard init`.
func owners[K demo.TenantID](ctx context.Context, st *State) (func(K) string, string, error) {
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{st.Etcd.Endpoint}}, st.Cluster)
	if err != nil {
		return nil, "", fmt.Errorf("open the catalog: %w", err)
	}
	defer store.Close()
	cs, err := store.Load(ctx)
	how := "the catalog"
	if errors.Is(err, catalog.ErrNotFound) {
		cs, how = &catalog.State{Ranges: catalog.EvenRanges(st.shardNames())}, "the ranges the stack was created with"
	} else if err != nil {
		return nil, "", fmt.Errorf("read the catalog: %w", err)
	}
	return func(t K) string { r, _ := cs.Owner(demo.Position(t)); return r.Shard }, how, nil
}

// connect connects to every shard of the stack; closeAll closes them all.
func connect(ctx context.Context, st *State) (map[string]demo.Querier, func(), error) {
	qs := map[string]demo.Querier{}
	var conns []*pgx.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close(context.WithoutCancel(ctx))
		}
	}
	for _, s := range st.Shards {
		c, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connect to %s (is the stack up? `reshard dev status`): %w", s.Name, err)
		}
		conns = append(conns, c)
		qs[s.Name] = c
	}
	return qs, closeAll, nil
}
