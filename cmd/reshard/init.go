package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgmeta"
)

// clusterFile is cluster.yaml (README.md, Using it, shows one).
type clusterFile struct {
	Cluster      string          `yaml:"cluster"`
	Key          string          `yaml:"key"`
	Distribution string          `yaml:"distribution"`
	Tables       []tableFile     `yaml:"tables"`
	Shards       []shardFile     `yaml:"shards"`
	Ranges       []rangeFile     `yaml:"ranges"`
	Partitions   []partitionFile `yaml:"partitions"`
}

// tableFile is an entry of tables: a name, or {table: NAME, key: COLUMN} for a table whose
// key column is not the file's key.
type tableFile struct {
	Table string `yaml:"table"`
	Key   string `yaml:"key"`
}

func (t *tableFile) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&t.Table)
	}
	type plain tableFile // without this method
	var p plain
	dec := yaml.NewDecoder(bytes.NewReader(mustYAML(n)))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("line %d: a table is a name or {table: NAME, key: COLUMN}: %s", n.Line, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if p.Table == "" {
		return fmt.Errorf("line %d: a table entry needs table: NAME", n.Line)
	}
	*t = tableFile(p)
	return nil
}

// mustYAML writes a parsed node back out (it came from YAML, so it always can).
func mustYAML(n *yaml.Node) []byte {
	b, err := yaml.Marshal(n)
	if err != nil {
		panic(err)
	}
	return b
}

func (cf *clusterFile) tableNames() []string {
	out := make([]string, len(cf.Tables))
	for i, t := range cf.Tables {
		out[i] = t.Table
	}
	return out
}

type shardFile struct {
	Name   string `yaml:"name"`
	DSN    string `yaml:"dsn"`
	DSNEnv string `yaml:"dsn_env"`
}

type rangeFile struct {
	Range string `yaml:"range"`
	Shard string `yaml:"shard"`
}

type partitionFile struct {
	Table           string `yaml:"table"`
	Column          string `yaml:"column"`
	Interval        string `yaml:"interval"`
	Premake         int    `yaml:"premake"`
	Retention       string `yaml:"retention"`
	RetentionAction string `yaml:"retention_action"`
	TimeZone        string `yaml:"time_zone"`
}

// errProblems is a list of problems found before anything was written.
type errProblems struct {
	what     string
	problems []string
}

func (e *errProblems) Error() string {
	if len(e.problems) == 1 {
		return fmt.Sprintf("%s: %s (nothing was written)", e.what, e.problems[0])
	}
	return fmt.Sprintf("%s: %d problems, nothing was written:\n  - %s", e.what, len(e.problems), strings.Join(e.problems, "\n  - "))
}

// readClusterFile parses cluster.yaml strictly: an unknown key is an error (a typo would
// otherwise be silently ignored).
func readClusterFile(path string, stdin io.Reader) (*clusterFile, error) {
	data, err := readInput(path, stdin)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cf clusterFile
	if err := dec.Decode(&cf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s is empty: see `reshard init --help` for the format", path)
		}
		return nil, fmt.Errorf("%s is not a valid cluster file: %s", path, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if cf.Key == "" {
		cf.Key = "tenant_id"
	}
	return &cf, nil
}

// catalogParts turns the file into catalog values; problems are returned, not failed on,
// so they can be listed with the shard checks.
func (cf *clusterFile) catalogParts(cluster string) (catalog.Config, []catalog.Shard, []catalog.Range, []string) {
	cfg := catalog.Config{Cluster: cluster, Key: cf.Key, Tables: cf.tableNames(), Distribution: catalog.Distribution(cf.Distribution)}
	for _, t := range cf.Tables {
		if t.Key != "" && t.Key != cf.Key {
			if cfg.TableKeys == nil {
				cfg.TableKeys = map[string]string{}
			}
			cfg.TableKeys[t.Table] = t.Key
		}
	}
	for _, p := range cf.Partitions {
		cfg.Partitions = append(cfg.Partitions, catalog.PartitionSpec(p))
	}
	var shards []catalog.Shard
	for _, s := range cf.Shards {
		shards = append(shards, catalog.Shard{Name: s.Name, DSN: s.DSN, DSNEnv: s.DSNEnv})
	}
	var ranges []catalog.Range
	var problems []string
	for _, r := range cf.Ranges {
		kr, err := catalog.ParseRange(r.Range)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		ranges = append(ranges, catalog.Range{Range: kr, Shard: r.Shard})
	}
	if len(cf.Ranges) == 0 {
		ranges = nil // split evenly
	}
	return cfg, shards, ranges, problems
}

func newInitCmd() *cobra.Command {
	var file string
	var force bool
	cmd := &cobra.Command{
		Use:   "init -f cluster.yaml [--force]",
		Short: "Validate the shards and tables of cluster.yaml and write the catalog to etcd",
		Long: `Reads cluster.yaml (cluster, key, distribution, tables, shards with dsn or dsn_env, optional
ranges, optional partitions), checks that every shard is reachable, has wal_level=logical, and that
every sharded table exists with its key column (all of one type: bigint, integer, smallint, uuid
or text; range distribution needs an integer), a primary key and a replica identity that includes
the key (on every partition). Every problem is listed at once; nothing is written unless all pass.
A foreign key from an unsharded table into a sharded one is a warning. An existing catalog is
refused unless --force.

Example cluster.yaml:

  cluster: demo
  key: tenant_id                # the default key column
  distribution: range           # or hash (any key type; ranges then hold the key's hash)
  tables:                       # a name (schema.table works), or {table: NAME, key: COLUMN}
    - {table: tenants, key: id}
    - orders
  shards:
    - name: s1
      dsn: "host=10.0.0.1 user=reshard dbname=app"   # no password here: use .pgpass or dsn_env
    - name: s2
      dsn_env: RESHARD_S2_DSN                          # the DSN is read from this variable
  ranges:                                              # optional; default: the key line split evenly
    - {range: ":1000", shard: s1}
    - {range: "1000:", shard: s2}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if file == "" {
				return errors.New("give the cluster file with -f cluster.yaml")
			}
			cf, err := readClusterFile(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			cluster, err := initCluster(cmd, cf)
			if err != nil {
				return err
			}
			cfg, shards, ranges, problems := cf.catalogParts(cluster)
			// The key type is the key columns': the first table's sets it, and the checks
			// below require every other table's to be the same. Tables are kept parents
			// first (copies load, and deletes go backwards, in this order).
			if vt := validTables(cfg.Tables); len(vt) == len(cfg.Tables) {
				var p string
				cfg.KeyType, cfg.Tables, p = pgmeta.InspectKeyspace(ctx, validShards(shards), cfg.Keyspace(), vt)
				if p != "" {
					problems = append(problems, p)
				}
			}
			if cfg.KeyType == "" {
				cfg.KeyType = catalog.KeyBigint
			}
			st, verr := catalog.NewState(cfg, shards, ranges)
			problems = append(problems, catalog.ProblemList(verr)...)

			store, closeStore, err := openStoreFor(ctx, cluster)
			if err != nil {
				return err
			}
			defer closeStore()
			old, lerr := store.Load(ctx)
			switch {
			case lerr == nil && !force:
				return fmt.Errorf("cluster %q already has a catalog in etcd: pass --force to replace it (`reshard catalog export` first to keep a backup)", cluster)
			case lerr == nil:
				// Replacing the catalog drops the migrations' journals, while their slots,
				// publications, fences and copied rows stay on the shards with nothing left
				// that knows how to remove them.
				if live := liveMigrations(old); len(live) > 0 {
					return fmt.Errorf("cluster %q has %d migration(s) in progress: %s; finish them, or `reshard cancel ID` each, before re-initialising (--force drops every migration journal; the history stays)",
						cluster, len(live), strings.Join(live, ", "))
				}
			case !errors.Is(lerr, catalog.ErrNotFound) && !force:
				return lerr
			}
			if cf.Key != "" {
				problems = append(problems, pgmeta.CheckShards(ctx, validShards(shards), cfg.Keyspace(), validTables(cfg.Tables))...)
			}
			if len(problems) > 0 {
				return &errProblems{what: "init " + file, problems: problems}
			}
			for _, w := range pgmeta.ForeignKeyWarnings(ctx, validShards(shards), validTables(cfg.Tables)) {
				fmt.Fprintln(cmd.ErrOrStderr(), w)
			}
			loaded, err := writeCatalog(ctx, store, "pass --force to replace it", func() error {
				return store.Init(ctx, cfg, shards, ranges, force)
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			return result.print(w, loaded, func() error {
				fmt.Fprintf(w, "catalog of cluster %s written to etcd at %s (revision %d): %d shards, %d ranges\n",
					cluster, strings.Join(store.Endpoints(), ","), loaded.Revision, len(st.Shards), len(st.Ranges))
				return printCatalog(w, loaded)
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "cluster file (YAML; - reads stdin)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing catalog (its history is kept)")
	return cmd
}

// initCluster picks the cluster name: the file's, unless --cluster (or RESHARD_CLUSTER)
// names another one, which is an error rather than a guess.
func initCluster(cmd *cobra.Command, cf *clusterFile) (string, error) {
	explicit := os.Getenv("RESHARD_CLUSTER") != ""
	if f := cmd.Flags().Lookup("cluster"); f != nil && f.Changed {
		explicit = true
	}
	switch {
	case cf.Cluster == "":
		return globals.cluster, nil
	case explicit && globals.cluster != cf.Cluster:
		return "", fmt.Errorf("the file is for cluster %q but --cluster (or RESHARD_CLUSTER) says %q: make them agree", cf.Cluster, globals.cluster)
	}
	return cf.Cluster, nil
}

// validShards keeps the shards worth connecting to (their own problems are already listed).
func validShards(in []catalog.Shard) []catalog.Shard {
	var out []catalog.Shard
	for _, s := range in {
		if catalog.ValidateShard(s) == nil {
			out = append(out, s)
		}
	}
	return out
}

func validTables(in []string) []string {
	var out []string
	for _, t := range in {
		if _, err := catalog.SplitTableName(t); err == nil {
			out = append(out, t)
		}
	}
	return out
}

// liveMigrations lists the migrations of st that are not finished, as "id (phase)".
func liveMigrations(st *catalog.State) []string {
	var out []string
	for id, m := range st.Migrations {
		if !m.Terminal() {
			out = append(out, fmt.Sprintf("%s (%s)", id, m.Phase))
		}
	}
	sort.Strings(out)
	return out
}
