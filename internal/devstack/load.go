package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
)

// Routes of a load: where it sends each tenant's writes.
const (
	RouteAuto    = "auto"    // the catalog once `reshard init` wrote it, the stack's ranges before
	RouteCatalog = "catalog" // a watched copy of the catalog, holding writes to frozen ranges
	RouteStatic  = "static"  // the ranges the stack was created with
)

// LoadOptions are `reshard dev load`'s flags.
type LoadOptions struct {
	Dir      string // as given with --dir
	Duration time.Duration
	Workers  int
	Rate     float64
	Route    string // RouteAuto, RouteCatalog or RouteStatic
	Quiet    int    // leave every Quiet-th tenant alone (0: none)
	Log      io.Writer
	// Progress gets the load's counters every 5 s while it runs; nil: none (a terminal
	// only, so a piped or redirected load stays quiet).
	Progress io.Writer
}

// LoadReport is what a load did: Result is its *demo.ResultOf[K] of the stack's key type
// (what -o json prints), the rest its totals.
type LoadReport struct {
	Result any
	demo.Counters
	Seconds float64
	Errors  []string
}

// Load runs the demo's write load on the stack at o.Dir and records what its acknowledged
// transactions did in <dir>/loads/<pid>.json, for Check.
func Load(ctx context.Context, o LoadOptions) (*LoadReport, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Quiet < 0 {
		return nil, fmt.Errorf("--quiet %d: use 0 (none) or N to leave every N-th tenant alone", o.Quiet)
	}
	st, err := readyState(o.Dir)
	if err != nil {
		return nil, err
	}
	if st.Data.Hashed() {
		return load[demo.UUID](ctx, st, o)
	}
	return load[int64](ctx, st, o)
}

func load[K demo.TenantID](ctx context.Context, st *State, o LoadOptions) (*LoadReport, error) {
	opts, err := st.Data.Options()
	if err != nil {
		return nil, err
	}
	tenants, err := demo.GenerateTenantsOf[K](opts)
	if err != nil {
		return nil, err
	}
	router, how, closeRouter, err := routerFor[K](ctx, st, o.Route)
	if err != nil {
		return nil, err
	}
	defer closeRouter()
	quiet := demo.QuietTenants(tenants, o.Quiet, demo.DefaultHot)
	l, err := demo.NewLoader(demo.LoadOptionsOf[K]{
		Tenants: tenants, Router: router, Workers: o.Workers, Duration: o.Duration, Rate: o.Rate,
		Seed:    uint64(time.Now().UnixNano()),
		RetryIf: func(err error) bool { return cutover.IsFenceError(err) || errors.Is(err, errRangeFrozen) },
		Quiet:   quiet,
	})
	if err != nil {
		return nil, err
	}
	finish, err := startLoadRecord(st.Dir, quiet)
	if err != nil {
		return nil, err
	}
	left := ""
	if len(quiet) > 0 {
		left = fmt.Sprintf(" (%d left quiet)", len(quiet))
	}
	fmt.Fprintf(o.Log, "load: %d workers on %d tenants%s, routed by %s, %s\n", o.Workers, len(tenants), left, how, durationText(o.Duration))
	stop := reportProgress(l.Counters, o.Progress)
	res, err := l.Run(ctx)
	stop()
	if err != nil {
		return nil, err
	}
	finish(res)
	return &LoadReport{Result: res, Counters: res.Counters, Seconds: res.Seconds, Errors: res.Errors}, nil
}

// routerFor returns the router of route, what it routes by, and its close function.
func routerFor[K demo.TenantID](ctx context.Context, st *State, route string) (demo.RouterOf[K], string, func(), error) {
	switch route {
	case RouteAuto, RouteCatalog:
		cr, err := newCatalogRouterOf[K](ctx, st.Etcd.Endpoint, st.Cluster)
		switch {
		case err == nil:
			return cr, "the catalog", cr.Close, nil
		case route == RouteCatalog || !errors.Is(err, catalog.ErrNotFound):
			return nil, "", nil, fmt.Errorf("route by the catalog: %w", err)
		}
		fallthrough // auto before `reshard init`: the stack's ranges
	case RouteStatic:
		dsns := map[string]string{}
		for _, s := range st.Shards {
			dsns[s.Name] = s.DSN
		}
		r, err := demo.NewStaticRouterOf[K](catalog.EvenRanges(st.shardNames()), dsns)
		if err != nil {
			return nil, "", nil, err
		}
		return r, "the ranges the stack was created with", func() {}, nil
	}
	return nil, "", nil, fmt.Errorf("--route %q: use auto, catalog or static", route)
}

// reportProgress writes the load's counters to w every 5 s until the returned stop is
// called; with w nil it does nothing.
func reportProgress(counters func() demo.Counters, w io.Writer) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c := counters()
				fmt.Fprintf(w, "  %d acknowledged, %d fenced and retried, %d failed\n", c.Acked, c.Fenced, c.Failed)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func durationText(d time.Duration) string {
	if d == 0 {
		return "until stopped (Ctrl-C)"
	}
	return "for " + d.String()
}

// startLoadRecord writes the record of a starting load into the stack's folder; the
// returned function writes its result (nil: it failed) when it ends.
func startLoadRecord[K demo.TenantID](dir string, quiet map[K]bool) (func(*demo.ResultOf[K]), error) {
	if err := os.MkdirAll(filepath.Join(dir, LoadsDir), 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LoadsDir, strconv.Itoa(os.Getpid())+".json")
	rec := demo.NewLoadRecord(os.Getpid(), time.Now(), quiet)
	if err := writeJSONFile(path, rec); err != nil {
		return nil, fmt.Errorf("record the load in %s: %w", path, err)
	}
	return func(res *demo.ResultOf[K]) {
		if res == nil {
			return // no end: a check treats what it could write as uncertain
		}
		rec.Finish(res, time.Now())
		_ = writeJSONFile(path, rec)
	}, nil
}

// runningLoads lists the pids of loads whose record has no end and whose process runs.
func runningLoads(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, LoadsDir, "*.json"))
	sort.Strings(files)
	var out []string
	for _, f := range files {
		// Only the pid and the end, which records of either key type have.
		var l struct {
			PID   int        `json:"pid"`
			Ended *time.Time `json:"ended"`
		}
		if readJSONFile(f, &l) == nil && l.Ended == nil && l.PID != os.Getpid() && ProcessAlive(l.PID) {
			out = append(out, strconv.Itoa(l.PID))
		}
	}
	return out
}

func readLoads[K demo.TenantID](dir string) ([]demo.LoadRecordOf[K], error) {
	files, err := filepath.Glob(filepath.Join(dir, LoadsDir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []demo.LoadRecordOf[K]
	for _, f := range files {
		var rec demo.LoadRecordOf[K]
		if err := readJSONFile(f, &rec); err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}
