package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/pgcluster"
)

// UpOptions are `reshard dev up`'s flags.
type UpOptions struct {
	Dir      string // as given with --dir (messages show it so)
	Shards   int
	Tenants  int
	Scale    float64
	Seed     uint64
	BasePort int // 0: free ports
	// Distribution is DistRange (bigint tenant ids; "" too) or DistHash (uuid tenant ids,
	// ranges over their hash).
	Distribution string
	Log          io.Writer // each step as it starts and ends; nil: nowhere
}

// UpResult is what Up started and loaded.
type UpResult struct {
	State  *State
	Placed map[string][]PlacedTenant // the demo tenants on each shard
	Counts map[string]demo.Counts    // rows loaded per shard and table
	Took   time.Duration
}

// up is one Up under way: what it was asked, and what it has made so far.
type up struct {
	UpOptions
	dir      string
	names    []string
	ranges   []catalog.Range
	data     demo.DataOptions
	tenants  dataSet
	ports    []int
	created  bool // Up made the folder (so undo removes it, not just its contents)
	st       *State
	start    time.Time
	etcdDone <-chan error
}

// Up starts a stack in o.Dir: etcd and the PostgreSQL clusters, the demo schema and data on
// them, and cluster.yaml. It refuses, changing nothing, a folder that holds a stack or
// anything else, and ports in use. If it fails or ctx ends half-way, it stops and removes
// what it had started.
func Up(ctx context.Context, o UpOptions) (res *UpResult, err error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	u, err := prepareUp(o)
	if err != nil {
		return nil, err
	}
	if err := u.makeFolder(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = u.undo(ctx, err)
		}
	}()
	// etcd first: it starts while the clusters do.
	if u.etcdDone, err = startEtcd(u.st); err != nil {
		return nil, err
	}
	if err := writeState(u.st); err != nil {
		return nil, err
	}
	if err := u.startClusters(ctx); err != nil {
		return nil, err
	}
	placed, counts, err := u.loadData(ctx)
	if err != nil {
		return nil, err
	}
	if err := u.finish(ctx); err != nil {
		return nil, err
	}
	return &UpResult{State: u.st, Placed: placed, Counts: counts, Took: time.Since(u.start)}, nil
}

// prepareUp checks the options, the folder and the ports before anything is made.
func prepareUp(o UpOptions) (*up, error) {
	dir, err := AbsDir(o.Dir)
	if err != nil {
		return nil, err
	}
	if o.Shards < 1 || o.Shards > 16 {
		return nil, fmt.Errorf("--shards %d: use 1 to 16", o.Shards)
	}
	if o.Scale <= 0 {
		return nil, fmt.Errorf("--scale %g: use a number above 0 (1 is about 60,000 orders)", o.Scale)
	}
	if err := checkDistribution(o.Distribution); err != nil {
		return nil, err
	}
	u := &up{UpOptions: o, dir: dir, names: make([]string, o.Shards)}
	for i := range u.names {
		u.names[i] = "s" + strconv.Itoa(i+1)
	}
	u.ranges = catalog.EvenRanges(u.names)
	u.data = demo.DataOptions{Tenants: o.Tenants, Scale: o.Scale, Seed: o.Seed, HotRange: u.ranges[0].Range, Now: time.Now().Truncate(time.Second)}
	if u.tenants, err = newDataSet(o.Distribution, u.data); err != nil {
		return nil, fmt.Errorf("%w (check --tenants and --scale)", err)
	}
	if _, err := pgcluster.BinDir(); err != nil {
		return nil, err
	}
	if err := refuseFolder(dir, o.Dir); err != nil {
		return nil, err
	}
	if u.ports, err = ports(o.Shards, o.BasePort); err != nil {
		return nil, err
	}
	return u, nil
}

// refuseFolder refuses a folder that holds a stack, half a stack, or anything else.
func refuseFolder(dir, dirFlag string) error {
	if st, err := ReadState(dir); err == nil {
		return fmt.Errorf("already up: %s holds a dev stack started %s (run `reshard dev down --dir %s` first)", dir, st.Created.Format(time.RFC3339), dirFlag)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("already up (or half up): %v", err)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s exists and is not a dev stack: pick another --dir, or empty it", dir)
	}
	return nil
}

// ports returns the ports of the shards, then etcd's client and peer ports.
func ports(shards, base int) ([]int, error) {
	n := shards + 2
	out := make([]int, 0, n)
	if base != 0 {
		if base < 1024 || base+n-1 > 65535 {
			return nil, fmt.Errorf("--base-port %d: use 1024 to %d (it needs %d consecutive ports)", base, 65535-n+1, n)
		}
		for i := range n {
			p := base + i
			if !pgcluster.PortFree(p) {
				return nil, fmt.Errorf("port 127.0.0.1:%d (%s) is in use: pick another --base-port, or stop what listens there", p, portRole(i, shards))
			}
			out = append(out, p)
		}
		return out, nil
	}
	seen := map[int]bool{}
	for len(out) < n {
		p, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

func portRole(i, shards int) string {
	switch {
	case i < shards:
		return "shard s" + strconv.Itoa(i+1)
	case i == shards:
		return "etcd client"
	}
	return "etcd peer"
}

// makeFolder creates the folder and writes the state of everything about to start.
func (u *up) makeFolder() error {
	u.start = time.Now()
	if _, err := os.Stat(u.dir); errors.Is(err, os.ErrNotExist) {
		u.created = true
	}
	if err := os.MkdirAll(u.dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", u.dir, err)
	}
	_ = os.Chmod(u.dir, 0o755) // the postgres user must reach the shards' folders
	st := &State{Cluster: Cluster, Dir: u.dir, Created: time.Now().UTC().Truncate(time.Second)}
	for i, n := range u.names {
		st.Shards = append(st.Shards, Shard{Name: n, Dir: filepath.Join(u.dir, "shards", n), Port: u.ports[i],
			DSN: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=app sslmode=disable", u.ports[i])})
	}
	st.Etcd = Etcd{
		Dir: filepath.Join(u.dir, "etcd"), ClientPort: u.ports[u.Shards], PeerPort: u.ports[u.Shards+1],
		Endpoint: fmt.Sprintf("127.0.0.1:%d", u.ports[u.Shards]), Log: filepath.Join(u.dir, "etcd", "etcd.log"),
	}
	st.Data = DataState{Tenants: u.tenants.count(), Scale: u.Scale, Seed: u.Seed, HotRange: u.ranges[0].Range.String(), Now: u.data.Now.Unix()}
	if u.Distribution == DistHash {
		st.Data.Distribution = DistHash
	}
	if err := writeState(st); err != nil {
		_ = os.RemoveAll(u.dir)
		return fmt.Errorf("write the stack's state: %w", err)
	}
	u.st = st
	return nil
}

// undo stops what a failed Up started and removes what it made; err is why it failed.
func (u *up) undo(ctx context.Context, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if derr := teardown(cctx, u.dir, u.st); derr != nil {
		fmt.Fprintf(u.Log, "reshard: cleaning up the half-started stack: %v\n", derr)
		return err
	}
	if u.created {
		_ = os.RemoveAll(u.dir)
	} else {
		ents, _ := os.ReadDir(u.dir)
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(u.dir, e.Name()))
		}
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: what dev up had started is stopped and removed", err)
	}
	return err
}

// step logs that what starts, and returns the function that logs how long it took.
func (u *up) step(what string) func() {
	t := time.Now()
	fmt.Fprintf(u.Log, "%s ...\n", what)
	return func() { fmt.Fprintf(u.Log, "  done in %.1fs\n", time.Since(t).Seconds()) }
}

func (u *up) startClusters(ctx context.Context) error {
	done := u.step(fmt.Sprintf("starting %d PostgreSQL clusters (wal_level=logical)", u.Shards))
	defer pgcluster.RemoveTemplate()
	if err := forEachShard(u.st.Shards, func(s Shard) error {
		c, err := pgcluster.Create(ctx, s.Dir, pgcluster.Options{Port: s.Port, Durable: true})
		if err != nil {
			return err
		}
		if err := c.Start(ctx); err != nil {
			return err
		}
		return createAppDB(ctx, c.DSN("postgres"))
	}); err != nil {
		return err
	}
	done()
	return nil
}

func createAppDB(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE app")
	return err
}

// loadData creates the demo schema on every shard and loads the tenants the even split of
// the key line gives it.
func (u *up) loadData(ctx context.Context) (map[string][]PlacedTenant, map[string]demo.Counts, error) {
	done := u.step(fmt.Sprintf("creating the demo schema and loading %d tenants (scale %g)", u.tenants.count(), u.Scale))
	placed, err := u.tenants.place(u.ranges)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	counts := map[string]demo.Counts{}
	if err := forEachShard(u.st.Shards, func(s Shard) error {
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", s.Name, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		c, err := u.tenants.load(ctx, conn, s.Name, u.data)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		mu.Lock()
		counts[s.Name] = c
		mu.Unlock()
		return nil
	}); err != nil {
		return nil, nil, err
	}
	done()
	return placed, counts, nil
}

// finish waits for etcd, writes cluster.yaml and marks the stack ready.
func (u *up) finish(ctx context.Context) error {
	done := u.step("waiting for etcd on " + u.st.Etcd.Endpoint)
	if err := waitEtcd(ctx, u.st, u.etcdDone, 30*time.Second); err != nil {
		return err
	}
	done()
	if err := writeClusterYAML(u.st, u.ranges); err != nil {
		return fmt.Errorf("write cluster.yaml: %w", err)
	}
	u.st.Ready = true
	return writeState(u.st)
}

// forEachShard runs fn for every shard at once and returns their errors joined.
func forEachShard(shards []Shard, fn func(Shard) error) error {
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(s)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeClusterYAML writes <dir>/cluster.yaml in the format `reshard init -f` reads, with the
// ranges the demo data was placed by.
func writeClusterYAML(st *State, ranges []catalog.Range) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `reshard dev up` on %s. Load it into the catalog with:\n", st.Created.Format(time.RFC3339))
	fmt.Fprintf(&b, "#   reshard init -f %s\n", filepath.Join(st.Dir, "cluster.yaml"))
	fmt.Fprintf(&b, "cluster: %s\n", st.Cluster)
	if st.Data.Hashed() {
		fmt.Fprintf(&b, "key: %s                      # the sharding column, uuid, in every sharded table\n", demo.Key)
		b.WriteString("distribution: hash                  # ranges are over uuid_hash_extended(tenant_id, 0)\n")
	} else {
		fmt.Fprintf(&b, "key: %s                      # the sharding column, bigint, in every sharded table\n", demo.Key)
	}
	fmt.Fprintf(&b, "tables: [%s]\n", strings.Join(demo.Tables, ", "))
	b.WriteString("shards:\n")
	for _, s := range st.Shards {
		fmt.Fprintf(&b, "  - name: %s\n    dsn: %q\n", s.Name, s.DSN)
	}
	if st.Data.Hashed() {
		b.WriteString("ranges:                             # the even split of the hash line: where the demo data was put\n")
	} else {
		b.WriteString("ranges:                             # the even split of the key line: where the demo data was put\n")
	}
	for _, r := range ranges {
		fmt.Fprintf(&b, "  - {range: %q, shard: %s}\n", r.Range.String(), r.Shard)
	}
	b.WriteString("partitions:\n")
	fmt.Fprintf(&b, "  - {table: %s, column: %s, interval: day, premake: 7, retention: 30d}\n", demo.PartitionedTable, demo.PartitionedColumn)
	return os.WriteFile(filepath.Join(st.Dir, "cluster.yaml"), []byte(b.String()), 0o644)
}
