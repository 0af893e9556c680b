package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/etcdserver"
	"github.com/reshard/reshard/internal/pgcluster"
)

// devState is <dir>/state.json: what a dev stack runs and where, written before anything
// starts and updated as parts come up, so `dev down` can stop a half-started stack.
type devState struct {
	Cluster string       `json:"cluster"`
	Dir     string       `json:"dir"`
	Created time.Time    `json:"created"`
	Ready   bool         `json:"ready"` // everything up and loaded
	Shards  []devShard   `json:"shards"`
	Etcd    devEtcd      `json:"etcd"`
	Data    devDataState `json:"data"`
}

type devShard struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	Port int    `json:"port"`
	DSN  string `json:"dsn"`
}

type devEtcd struct {
	Dir        string `json:"dir"`
	ClientPort int    `json:"client_port"`
	PeerPort   int    `json:"peer_port"`
	Endpoint   string `json:"endpoint"`
	PID        int    `json:"pid,omitempty"`
	Log        string `json:"log"`
}

// devDataState is what regenerates the demo tenants (and their weights) for `dev load`.
type devDataState struct {
	Tenants  int     `json:"tenants"`
	Scale    float64 `json:"scale"`
	Seed     uint64  `json:"seed"`
	HotRange string  `json:"hot_range"`
	Now      int64   `json:"now_unix"`
}

const (
	devCluster   = "demo"
	devStateFile = "state.json"
	devPIDFile   = "etcd.pid"
)

func (d devDataState) options() (demo.DataOptions, error) {
	o := demo.DataOptions{Tenants: d.Tenants, Scale: d.Scale, Seed: d.Seed, Now: time.Unix(d.Now, 0)}
	if d.HotRange != "" {
		r, err := catalog.ParseRange(d.HotRange)
		if err != nil {
			return o, err
		}
		o.HotRange = r
	}
	return o, nil
}

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "A local stack: PostgreSQL shards and etcd, with a multi-tenant demo data set",
		Long: `reshard dev runs a local stack for trying reshard: N PostgreSQL 15 clusters (the shards)
and an etcd, as background processes that outlive the command, all in one folder. The shards
hold a multi-tenant demo schema with skewed data (a few tenants much bigger and busier than the
rest), and <dir>/cluster.yaml describes them for ` + "`reshard init -f`" + `.`,
	}
	cmd.AddCommand(newDevUpCmd(), newDevDownCmd(), newDevStatusCmd(), newDevLoadCmd(), newDevCheckCmd(), newDevEtcdCmd())
	return cmd
}

func devAbsDir(dir string) (string, error) {
	if strings.TrimSpace(dir) == "" {
		return "", errors.New("--dir is empty: give the folder of the dev stack, e.g. .reshard-dev")
	}
	return filepath.Abs(dir)
}

func readDevState(dir string) (*devState, error) {
	b, err := os.ReadFile(filepath.Join(dir, devStateFile))
	if err != nil {
		return nil, err
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): run `reshard dev down --dir %s`", filepath.Join(dir, devStateFile), err, dir)
	}
	return &st, nil
}

func writeDevState(st *devState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(st.Dir, devStateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(st.Dir, devStateFile))
}

// ---------------------------------------------------------------------------- dev up

type devUpFlags struct {
	dir      string
	shards   int
	tenants  int
	scale    float64
	seed     uint64
	basePort int
}

func newDevUpCmd() *cobra.Command {
	var f devUpFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start N PostgreSQL shards and etcd, load the demo data, write cluster.yaml",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devUp(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", ".reshard-dev", "folder of the stack (created; must not exist or be empty)")
	fl.IntVar(&f.shards, "shards", 3, "number of PostgreSQL shards (1 to 16)")
	fl.IntVar(&f.tenants, "tenants", demo.DefaultTenants, "number of demo tenants")
	fl.Float64Var(&f.scale, "scale", 1, "multiplies the demo rows (1 is about 60,000 orders, some 40 MB)")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the demo data (same seed, same data)")
	fl.IntVar(&f.basePort, "base-port", 0, "first port: shards use base..base+N-1, etcd base+N and base+N+1 (0: free ports)")
	return cmd
}

// devPorts returns the ports of the shards, then etcd's client and peer ports.
func devPorts(shards, base int) ([]int, error) {
	n := shards + 2
	ports := make([]int, 0, n)
	if base != 0 {
		if base < 1024 || base+n-1 > 65535 {
			return nil, fmt.Errorf("--base-port %d: use 1024 to %d (it needs %d consecutive ports)", base, 65535-n+1, n)
		}
		for i := range n {
			p := base + i
			if !pgcluster.PortFree(p) {
				return nil, fmt.Errorf("port 127.0.0.1:%d (%s) is in use: pick another --base-port, or stop what listens there", p, devPortRole(i, shards))
			}
			ports = append(ports, p)
		}
		return ports, nil
	}
	seen := map[int]bool{}
	for len(ports) < n {
		p, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func devPortRole(i, shards int) string {
	switch {
	case i < shards:
		return "shard s" + strconv.Itoa(i+1)
	case i == shards:
		return "etcd client"
	}
	return "etcd peer"
}

func devUp(ctx context.Context, out, errw io.Writer, f devUpFlags) (err error) {
	dir, err := devAbsDir(f.dir)
	if err != nil {
		return err
	}
	if f.shards < 1 || f.shards > 16 {
		return fmt.Errorf("--shards %d: use 1 to 16", f.shards)
	}
	if f.scale <= 0 {
		return fmt.Errorf("--scale %g: use a number above 0 (1 is about 60,000 orders)", f.scale)
	}
	names := make([]string, f.shards)
	for i := range names {
		names[i] = "s" + strconv.Itoa(i+1)
	}
	ranges := catalog.EvenRanges(names)
	dataOpts := demo.DataOptions{Tenants: f.tenants, Scale: f.scale, Seed: f.seed, HotRange: ranges[0].Range, Now: time.Now().Truncate(time.Second)}
	tenants, err := demo.GenerateTenants(dataOpts)
	if err != nil {
		return fmt.Errorf("%w (check --tenants and --scale)", err)
	}
	if _, err := pgcluster.BinDir(); err != nil {
		return err
	}
	if st, err := readDevState(dir); err == nil {
		return fmt.Errorf("already up: %s holds a dev stack started %s (run `reshard dev down --dir %s` first)", dir, st.Created.Format(time.RFC3339), f.dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("already up (or half up): %v", err)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s exists and is not a dev stack: pick another --dir, or empty it", dir)
	}
	ports, err := devPorts(f.shards, f.basePort)
	if err != nil {
		return err
	}

	start := time.Now()
	created := false
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	_ = os.Chmod(dir, 0o755) // the postgres user must reach the shards' folders
	st := &devState{Cluster: devCluster, Dir: dir, Created: time.Now().UTC().Truncate(time.Second)}
	for i, n := range names {
		sd := filepath.Join(dir, "shards", n)
		st.Shards = append(st.Shards, devShard{Name: n, Dir: sd, Port: ports[i], DSN: fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=app sslmode=disable", ports[i])})
	}
	st.Etcd = devEtcd{
		Dir: filepath.Join(dir, "etcd"), ClientPort: ports[f.shards], PeerPort: ports[f.shards+1],
		Endpoint: fmt.Sprintf("127.0.0.1:%d", ports[f.shards]), Log: filepath.Join(dir, "etcd", "etcd.log"),
	}
	st.Data = devDataState{Tenants: len(tenants), Scale: f.scale, Seed: f.seed, HotRange: ranges[0].Range.String(), Now: dataOpts.Now.Unix()}
	if err := writeDevState(st); err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("write the stack's state: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Leave nothing behind: stop what started, remove what was made.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", ctx.Err())
		}
		if derr := devTeardown(cctx, dir, st); derr != nil {
			fmt.Fprintf(errw, "reshard: cleaning up the half-started stack: %v\n", derr)
			return
		}
		if created {
			_ = os.RemoveAll(dir)
		} else {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: what dev up had started is stopped and removed", err)
		}
	}()

	step := func(what string) func() {
		t := time.Now()
		fmt.Fprintf(errw, "%s ...\n", what)
		return func() { fmt.Fprintf(errw, "  done in %.1fs\n", time.Since(t).Seconds()) }
	}

	// etcd first: it starts while the clusters do.
	etcdExited, err := startDevEtcd(st)
	if err != nil {
		return err
	}
	if err := writeDevState(st); err != nil {
		return err
	}

	done := step(fmt.Sprintf("starting %d PostgreSQL clusters (wal_level=logical)", f.shards))
	defer pgcluster.RemoveTemplate()
	if err := devForEachShard(st.Shards, func(s devShard) error {
		c, err := pgcluster.Create(ctx, s.Dir, pgcluster.Options{Port: s.Port, Durable: true})
		if err != nil {
			return err
		}
		if err := c.Start(ctx); err != nil {
			return err
		}
		return devCreateAppDB(ctx, c.DSN("postgres"))
	}); err != nil {
		return err
	}
	done()

	done = step(fmt.Sprintf("creating the demo schema and loading %d tenants (scale %g)", len(tenants), f.scale))
	placed, err := demo.Place(tenants, ranges)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	counts := map[string]demo.Counts{}
	if err := devForEachShard(st.Shards, func(s devShard) error {
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", s.Name, err)
		}
		defer conn.Close(context.WithoutCancel(ctx))
		if err := demo.CreateSchema(ctx, conn, dataOpts.Now); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		c, err := demo.LoadShard(ctx, conn, placed[s.Name], dataOpts)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		mu.Lock()
		counts[s.Name] = c
		mu.Unlock()
		return nil
	}); err != nil {
		return err
	}
	done()

	done = step("waiting for etcd on " + st.Etcd.Endpoint)
	if err := waitDevEtcd(ctx, st, etcdExited, 30*time.Second); err != nil {
		return err
	}
	done()

	if err := writeClusterYAML(st, ranges); err != nil {
		return fmt.Errorf("write cluster.yaml: %w", err)
	}
	st.Ready = true
	if err := writeDevState(st); err != nil {
		return err
	}
	if globals.output == "json" {
		return writeJSON(out, map[string]any{"state": st, "rows": counts, "seconds": time.Since(start).Seconds(), "cluster_yaml": filepath.Join(dir, "cluster.yaml")})
	}
	printDevSummary(out, f.dir, st, placed, counts, time.Since(start))
	return nil
}

// forEachShard runs fn for every shard at once and returns the first error.
func devForEachShard(shards []devShard, fn func(devShard) error) error {
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

func devCreateAppDB(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE app")
	return err
}

// startDevEtcd re-executes this binary as `reshard dev etcd` in its own session, so it
// outlives this command and no terminal signal reaches it. The returned channel gets the
// process's exit while this command still runs.
func startDevEtcd(st *devState) (<-chan error, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the reshard binary to run etcd: %w", err)
	}
	if err := os.MkdirAll(st.Etcd.Dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(st.Etcd.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "dev", "etcd", "--dir", st.Etcd.Dir,
		"--client-port", strconv.Itoa(st.Etcd.ClientPort), "--peer-port", strconv.Itoa(st.Etcd.PeerPort))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = st.Etcd.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd (%s dev etcd): %w", exe, err)
	}
	st.Etcd.PID = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return exited, nil
}

// waitDevEtcd waits until etcd answers a read through the real client.
func waitDevEtcd(ctx context.Context, st *devState, exited <-chan error, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("etcd exited at start (%v); its log %s says:\n%s", err, st.Etcd.Log, devLogTail(st.Etcd.Log, 10))
		default:
		}
		err := devProbeEtcd(ctx, st.Etcd.Endpoint, time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd on %s did not answer within %s: %w (see %s)", st.Etcd.Endpoint, bound, err, st.Etcd.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func devProbeEtcd(ctx context.Context, endpoint string, timeout time.Duration) error {
	s, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{endpoint}, DialTimeout: timeout}, devCluster)
	if err != nil {
		return err
	}
	return s.Close()
}

func devLogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeClusterYAML writes <dir>/cluster.yaml in the format `reshard init -f` reads, with the
// ranges the demo data was placed by.
func writeClusterYAML(st *devState, ranges []catalog.Range) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `reshard dev up` on %s. Load it into the catalog with:\n", st.Created.Format(time.RFC3339))
	fmt.Fprintf(&b, "#   reshard init -f %s\n", filepath.Join(st.Dir, "cluster.yaml"))
	fmt.Fprintf(&b, "cluster: %s\n", st.Cluster)
	fmt.Fprintf(&b, "key: %s                      # the sharding column, bigint, in every sharded table\n", demo.Key)
	fmt.Fprintf(&b, "tables: [%s]\n", strings.Join(demo.Tables, ", "))
	b.WriteString("shards:\n")
	for _, s := range st.Shards {
		fmt.Fprintf(&b, "  - name: %s\n    dsn: %q\n", s.Name, s.DSN)
	}
	b.WriteString("ranges:                             # the even split of the key line: where the demo data was put\n")
	for _, r := range ranges {
		fmt.Fprintf(&b, "  - {range: %q, shard: %s}\n", r.Range.String(), r.Shard)
	}
	b.WriteString("partitions:\n")
	fmt.Fprintf(&b, "  - {table: %s, column: %s, interval: day, premake: 7, retention: 30d}\n", demo.PartitionedTable, demo.PartitionedColumn)
	return os.WriteFile(filepath.Join(st.Dir, "cluster.yaml"), []byte(b.String()), 0o644)
}

func printDevSummary(w io.Writer, dirFlag string, st *devState, placed map[string][]demo.Tenant, counts map[string]demo.Counts, took time.Duration) {
	fmt.Fprintf(w, "\ndev stack up in %s (%.1fs): %d PostgreSQL shards, etcd, demo data\n\n", st.Dir, took.Seconds(), len(st.Shards))
	for _, s := range st.Shards {
		c := counts[s.Name]
		var weight float64
		var hot []string
		for _, t := range placed[s.Name] {
			weight += t.Weight
			if t.Plan == "enterprise" {
				hot = append(hot, strconv.FormatInt(t.ID, 10))
			}
		}
		fmt.Fprintf(w, "  %s  %d tenants, %d orders, %d order items, %d ledger rows, %d events; %.0f%% of the write load\n",
			s.Name, c["tenants"], c["orders"], c["order_items"], c["ledger"], c["events"], 100*weight)
		if len(hot) > 0 {
			fmt.Fprintf(w, "      hot tenants: %s\n", strings.Join(hot, ", "))
		}
		fmt.Fprintf(w, "      psql \"%s\"\n", s.DSN)
	}
	fmt.Fprintf(w, "  etcd  %s (pid %d, log %s)\n\n", st.Etcd.Endpoint, st.Etcd.PID, st.Etcd.Log)
	fmt.Fprintf(w, "  export RESHARD_ETCD=%s RESHARD_CLUSTER=%s\n\n", st.Etcd.Endpoint, st.Cluster)
	dirArg := ""
	if dirFlag != ".reshard-dev" {
		dirArg = " --dir " + dirFlag
	}
	fmt.Fprintln(w, "next:")
	fmt.Fprintf(w, "  reshard init -f %s        # write the catalog\n", filepath.Join(dirFlag, "cluster.yaml"))
	fmt.Fprintln(w, "  reshard stats collect && reshard plan     # see the hot shard and what to move")
	fmt.Fprintf(w, "  reshard dev load%s --duration 30s       # a live write load on the demo tenants\n", dirArg)
	fmt.Fprintf(w, "  reshard dev down%s                      # stop everything, remove %s\n", dirArg, dirFlag)
}

// ---------------------------------------------------------------------------- dev etcd

func newDevEtcdCmd() *cobra.Command {
	var dir string
	var cport, pport int
	cmd := &cobra.Command{
		Use:    "etcd",
		Short:  "Run the dev stack's etcd in the foreground (started by `dev up`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" || cport == 0 || pport == 0 {
				return errors.New("dev etcd needs --dir, --client-port and --peer-port")
			}
			ctx := cmd.Context()
			if err := os.WriteFile(filepath.Join(dir, devPIDFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
				return err
			}
			srv, err := etcdserver.Start(ctx, filepath.Join(dir, "data"), etcdserver.Options{ClientPort: cport, PeerPort: pport})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s etcd serving on %s (pid %d)\n", time.Now().Format(time.RFC3339), srv.Endpoint(), os.Getpid())
			select {
			case <-ctx.Done(): // SIGTERM or SIGINT: stop cleanly
				srv.Close()
				fmt.Fprintf(cmd.OutOrStdout(), "%s etcd stopped\n", time.Now().Format(time.RFC3339))
				return nil
			case err := <-srv.Done():
				srv.Close()
				return fmt.Errorf("etcd stopped by itself: %w", err)
			}
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "etcd's folder")
	cmd.Flags().IntVar(&cport, "client-port", 0, "client port")
	cmd.Flags().IntVar(&pport, "peer-port", 0, "peer port")
	return cmd
}

// ---------------------------------------------------------------------------- dev down

func newDevDownCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the dev stack's PostgreSQL clusters and etcd and remove its folder",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devDown(cmd.Context(), cmd.OutOrStdout(), dir)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".reshard-dev", "folder of the stack")
	return cmd
}

func devDown(ctx context.Context, out io.Writer, dirFlag string) error {
	dir, err := devAbsDir(dirFlag)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "no dev stack in %s: nothing to do\n", dir)
		return nil
	}
	st, err := readDevState(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, "etcd", devPIDFile)); perr != nil {
			return fmt.Errorf("%s does not look like a dev stack (no %s): not touching it", dir, devStateFile)
		}
		st = nil // a stack whose state file is gone: go by what is in the folder
	} else if err != nil {
		st = nil
	}
	// Don't let Ctrl-C stop the teardown half-way.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	if err := devTeardown(cctx, dir, st); err != nil {
		return fmt.Errorf("%w; %s kept so you can retry `reshard dev down --dir %s`", err, dir, dirFlag)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	fmt.Fprintf(out, "dev stack stopped; %s removed\n", dir)
	return nil
}

// devTeardown stops every PostgreSQL cluster and the etcd process of the stack in dir. It
// works from the state when there is one and from the folder's contents otherwise, and
// returns an error only if something still runs at the end.
func devTeardown(ctx context.Context, dir string, st *devState) error {
	var problems []string
	// Shards: every cluster folder, whether or not the state lists it.
	clusters := map[string]int{}
	if st != nil {
		for _, s := range st.Shards {
			clusters[s.Dir] = s.Port
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "shards")); err == nil {
		for _, e := range ents {
			d := filepath.Join(dir, "shards", e.Name())
			if _, ok := clusters[d]; !ok {
				clusters[d] = 0
			}
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for d, port := range clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := devStopCluster(ctx, d, port); err != nil {
				mu.Lock()
				problems = append(problems, err.Error())
				mu.Unlock()
			}
		}()
	}
	// etcd: the pid of the state and of the pid file (the child writes it itself).
	pids := map[int]bool{}
	etcdDir := filepath.Join(dir, "etcd")
	if st != nil {
		if st.Etcd.PID > 0 {
			pids[st.Etcd.PID] = true
		}
		if st.Etcd.Dir != "" {
			etcdDir = st.Etcd.Dir
		}
	}
	if b, err := os.ReadFile(filepath.Join(etcdDir, devPIDFile)); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 {
			pids[p] = true
		}
	}
	for pid := range pids {
		if !isDevEtcd(pid, etcdDir) {
			continue // gone, or the pid now belongs to another program
		}
		if err := devStopProcess(ctx, pid, syscall.SIGTERM, 15*time.Second); err != nil {
			problems = append(problems, fmt.Sprintf("etcd (pid %d): %v", pid, err))
		}
	}
	wg.Wait()
	if len(problems) > 0 {
		sort.Strings(problems)
		return errors.New("could not stop everything: " + strings.Join(problems, "; "))
	}
	return nil
}

func devStopCluster(ctx context.Context, dir string, port int) error {
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil // never started or stopped already
	}
	c, oerr := pgcluster.Open(dir, port)
	if oerr == nil {
		if err := c.Stop(ctx); err == nil {
			return nil
		}
	}
	// pg_ctl could not do it: signal the postmaster ourselves (SIGQUIT is an immediate
	// shutdown; the dev stack's data is about to be removed anyway).
	pid, perr := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if perr != nil || pid <= 0 {
		return fmt.Errorf("PostgreSQL in %s: cannot read its pid from %s", dir, pidFile)
	}
	if !processAlive(pid) {
		return nil
	}
	if err := devStopProcess(ctx, pid, syscall.SIGQUIT, 30*time.Second); err != nil {
		return fmt.Errorf("PostgreSQL in %s (pid %d): %w", dir, pid, err)
	}
	return nil
}

// isDevEtcd reports whether pid runs `reshard dev etcd` for etcdDir, so a recycled pid is
// never signalled.
func isDevEtcd(pid int, etcdDir string) bool {
	if !processAlive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	hasDevEtcd, hasDir := false, false
	for i, a := range args {
		if a == "etcd" && i > 0 && args[i-1] == "dev" {
			hasDevEtcd = true
		}
		if a == "--dir" && i+1 < len(args) && filepath.Clean(args[i+1]) == filepath.Clean(etcdDir) {
			hasDir = true
		}
	}
	return hasDevEtcd && hasDir
}

// alive reports whether pid exists and is not a zombie waiting to be reaped.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name in parentheses, which may itself hold spaces.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// stopProcess sends sig, waits up to grace for the process to end, then kills it.
func devStopProcess(ctx context.Context, pid int, sig syscall.Signal, grace time.Duration) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	if devWaitGone(ctx, pid, grace) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if devWaitGone(ctx, pid, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("still running after %s and SIGKILL", grace)
}

func devWaitGone(ctx context.Context, pid int, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for processAlive(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// ---------------------------------------------------------------------------- dev status

type devStatusShard struct {
	devShard
	Running bool   `json:"running"`
	Tenants int64  `json:"tenants"`
	Bytes   int64  `json:"bytes"`
	Error   string `json:"error,omitempty"`
}

func newDevStatusCmd() *cobra.Command {
	var dirFlag string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the dev stack runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			dir, err := devAbsDir(dirFlag)
			if err != nil {
				return err
			}
			st, err := readDevState(dir)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("no dev stack in %s (start one with `reshard dev up`)", dir)
			} else if err != nil {
				return err
			}
			shards := make([]devStatusShard, len(st.Shards))
			_ = devForEachShard(st.Shards, func(s devShard) error {
				i := devShardIndex(st.Shards, s.Name)
				shards[i] = devShardStatus(ctx, s)
				return nil
			})
			etcdUp := isDevEtcd(st.Etcd.PID, st.Etcd.Dir)
			etcdErr := ""
			if etcdUp {
				if err := devProbeEtcd(ctx, st.Etcd.Endpoint, 2*time.Second); err != nil {
					etcdErr = err.Error()
				}
			}
			allUp := etcdUp && etcdErr == ""
			for _, s := range shards {
				allUp = allUp && s.Running && s.Error == ""
			}
			if globals.output == "json" {
				if err := writeJSON(out, map[string]any{"dir": dir, "cluster": st.Cluster, "ready": st.Ready, "up": allUp, "shards": shards,
					"etcd": map[string]any{"endpoint": st.Etcd.Endpoint, "pid": st.Etcd.PID, "running": etcdUp, "error": etcdErr}}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "dev stack in %s (cluster %s, started %s)\n", dir, st.Cluster, st.Created.Format(time.RFC3339))
				for _, s := range shards {
					state := "running"
					if !s.Running {
						state = "stopped"
					}
					fmt.Fprintf(out, "  %-5s %-8s 127.0.0.1:%-5d %d tenants, %.1f MB", s.Name, state, s.Port, s.Tenants, float64(s.Bytes)/1e6)
					if s.Error != "" {
						fmt.Fprintf(out, "  (%s)", s.Error)
					}
					fmt.Fprintln(out)
				}
				state := "running"
				if !etcdUp {
					state = "stopped"
				}
				fmt.Fprintf(out, "  %-5s %-8s %s pid %d", "etcd", state, st.Etcd.Endpoint, st.Etcd.PID)
				if etcdErr != "" {
					fmt.Fprintf(out, "  (%s)", etcdErr)
				}
				fmt.Fprintln(out)
			}
			if !allUp {
				return fmt.Errorf("the dev stack in %s is not fully up: run `reshard dev down --dir %s`, then `reshard dev up`", dir, dirFlag)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dirFlag, "dir", ".reshard-dev", "folder of the stack")
	return cmd
}

func devShardIndex(ss []devShard, name string) int {
	for i, s := range ss {
		if s.Name == name {
			return i
		}
	}
	return -1
}

func devShardStatus(ctx context.Context, s devShard) devStatusShard {
	out := devStatusShard{devShard: s}
	if c, err := pgcluster.Open(s.Dir, s.Port); err == nil {
		out.Running = c.Running(ctx)
	}
	if !out.Running {
		return out
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.DSN)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(cctx, "SELECT (SELECT count(*) FROM tenants), pg_database_size(current_database())").Scan(&out.Tenants, &out.Bytes); err != nil {
		out.Error = err.Error()
	}
	return out
}

// ---------------------------------------------------------------------------- dev load

func newDevLoadCmd() *cobra.Command {
	var (
		dirFlag  string
		duration time.Duration
		workers  int
		rate     float64
		route    string
		quiet    int
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Run a live write load on the demo tenants (hot tenants get most of it)",
		Long: `reshard dev load runs workers that write to the demo tenants as an application would: new
orders with items, ledger entries that move the tenant's balance in the same transaction,
events, status updates and deletes. Busier tenants get more of the load.

Routing: --route catalog asks the catalog in etcd where each tenant lives (a watched
copy), holds writes to a frozen range, and retries a write rejected by a cutover fence
(SQLSTATE ` + cutover.FenceSQLState + `); --route static uses the ranges the stack was created with; auto
(the default) uses the catalog once ` + "`reshard init`" + ` has written it.

What it did (rows each acknowledged transaction inserted and deleted per tenant, the tenants
it left alone with --quiet) is recorded in <dir>/` + devLoadsDir + `/ for ` + "`reshard dev check`" + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devLoad(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), dirFlag, duration, workers, rate, route, quiet)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dirFlag, "dir", ".reshard-dev", "folder of the stack")
	fl.DurationVar(&duration, "duration", 30*time.Second, "how long to run (0: until Ctrl-C)")
	fl.IntVar(&workers, "workers", 4, "concurrent writers")
	fl.Float64Var(&rate, "rate", 0, "transactions per second over all workers (0: as fast as possible)")
	fl.StringVar(&route, "route", "auto", "where a tenant lives: auto, catalog or static")
	fl.IntVar(&quiet, "quiet", 0, "leave every N-th tenant in key order alone (never the hot ones), so `dev check` can expect their rows exactly (0: none)")
	return cmd
}

func devLoad(ctx context.Context, out, errw io.Writer, dirFlag string, duration time.Duration, workers int, rate float64, route string, quiet int) error {
	if quiet < 0 {
		return fmt.Errorf("--quiet %d: use 0 (none) or N to leave every N-th tenant alone", quiet)
	}
	st, err := readyDevState(dirFlag)
	if err != nil {
		return err
	}
	opts, err := st.Data.options()
	if err != nil {
		return err
	}
	tenants, err := demo.GenerateTenants(opts)
	if err != nil {
		return err
	}
	var router demo.Router
	switch route {
	case "auto", "catalog":
		cr, err := newCatalogRouter(ctx, st.Etcd.Endpoint, st.Cluster)
		switch {
		case err == nil:
			defer cr.Close()
			router = cr
			route = "the catalog"
		case route == "catalog" || !errors.Is(err, catalog.ErrNotFound):
			return fmt.Errorf("route by the catalog: %w", err)
		}
		if router != nil {
			break
		}
		fallthrough
	case "static":
		names := make([]string, len(st.Shards))
		dsns := map[string]string{}
		for i, s := range st.Shards {
			names[i] = s.Name
			dsns[s.Name] = s.DSN
		}
		if router, err = demo.NewStaticRouter(catalog.EvenRanges(names), dsns); err != nil {
			return err
		}
		route = "the ranges the stack was created with"
	default:
		return fmt.Errorf("--route %q: use auto, catalog or static", route)
	}
	quietSet := demo.QuietTenants(tenants, quiet, demo.DefaultHot)
	l, err := demo.NewLoader(demo.LoadOptions{
		Tenants: tenants, Router: router, Workers: workers, Duration: duration, Rate: rate,
		Seed:    uint64(time.Now().UnixNano()),
		RetryIf: func(err error) bool { return cutover.IsFenceError(err) || errors.Is(err, errRangeFrozen) },
		Quiet:   quietSet,
	})
	if err != nil {
		return err
	}
	finish, err := devStartLoadRecord(st.Dir, quietSet)
	if err != nil {
		return err
	}
	left := ""
	if len(quietSet) > 0 {
		left = fmt.Sprintf(" (%d left quiet)", len(quietSet))
	}
	fmt.Fprintf(errw, "load: %d workers on %d tenants%s, routed by %s, %s\n", workers, len(tenants), left, route, devDurationText(duration))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && errw == io.Writer(os.Stderr) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					c := l.Counters()
					fmt.Fprintf(errw, "  %d acknowledged, %d fenced and retried, %d failed\n", c.Acked, c.Fenced, c.Failed)
				}
			}
		}()
	}
	res, err := l.Run(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	finish(res)
	if globals.output == "json" {
		return writeJSON(out, res)
	}
	fmt.Fprintf(out, "load: %d transactions acknowledged in %.1fs (%.0f/s); %d attempts, %d fenced and retried, %d other retries, %d failed, %d with unknown outcome\n",
		res.Acked, res.Seconds, float64(res.Acked)/max(res.Seconds, 0.001), res.Attempts, res.Fenced, res.Transient, res.Failed, res.Unknown)
	kinds := make([]string, 0, len(res.ByKind))
	for k := range res.ByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(out, "  %-10s %d\n", k, res.ByKind[k])
	}
	for _, e := range res.Errors {
		fmt.Fprintf(out, "  error: %s\n", e)
	}
	return nil
}

func devDurationText(d time.Duration) string {
	if d == 0 {
		return "until stopped (Ctrl-C)"
	}
	return "for " + d.String()
}

// errRangeFrozen means the tenant's range stayed frozen for a cutover longer than the
// router holds a write: the loader retries it.
var errRangeFrozen = errors.New("range frozen for a cutover")

// catalogRouter routes by the catalog's Resolver (a watched copy of the catalog): a write
// to a frozen range is held until the range serves again, then sent to its owner then.
type catalogRouter struct {
	store *catalog.Store
	cache *catalog.Cache
	res   *catalog.Resolver
	hold  time.Duration // longest a write is held for a frozen range
}

func newCatalogRouter(ctx context.Context, endpoint, cluster string) (*catalogRouter, error) {
	store, err := catalog.Open(ctx, catalog.ConnConfig{Endpoints: []string{endpoint}}, cluster)
	if err != nil {
		return nil, err
	}
	cache, err := store.Watch(context.WithoutCancel(ctx))
	if err != nil {
		store.Close()
		return nil, err
	}
	return &catalogRouter{store: store, cache: cache, res: catalog.NewResolver(cache), hold: 10 * time.Second}, nil
}

func (r *catalogRouter) ShardFor(ctx context.Context, tenant int64) (string, error) {
	wctx, cancel := context.WithTimeout(ctx, r.hold)
	defer cancel()
	rt, err := r.res.WaitServing(wctx, tenant)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("tenant %d, range %s: %w", tenant, rt.Range, errRangeFrozen)
		}
		return "", err
	}
	sh, ok := r.cache.State().Shards[rt.Shard]
	if !ok {
		return "", fmt.Errorf("range %s names shard %q, which the catalog does not list", rt.Range, rt.Shard)
	}
	return sh.ConnString()
}

func (r *catalogRouter) Close() {
	r.cache.Close()
	r.store.Close()
}
