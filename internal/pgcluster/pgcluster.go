package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNoServer is returned when the PostgreSQL server binaries cannot be found.
var ErrNoServer = errors.New("pgcluster: PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql-15 or put its bin folder on PATH (or set RESHARD_PG_BIN)")

// ErrPortInUse is returned by Start when the requested port is taken by someone else.
var ErrPortInUse = errors.New("pgcluster: port already in use")

// Options tune a new cluster.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Durable keeps fsync on. Tests turn it off for speed; a dev stack keeps it.
	Durable bool
	// Settings are extra postgresql.conf lines (name -> value, written verbatim).
	Settings map[string]string
}

// Cluster is one PostgreSQL cluster in Dir.
type Cluster struct {
	Dir  string // the cluster's folder; the data directory is Dir/data
	Port int
	bin  string
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// LogFile is the server log.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "postgres.log") }

// DSN returns a libpq connection string for database db as the postgres superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", c.Port, db)
}

// Open returns a handle on an existing cluster folder (for `reshard dev down`).
func Open(dir string, port int) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	return &Cluster{Dir: dir, Port: port, bin: bin}, nil
}

// BinDir finds the PostgreSQL server binaries: $RESHARD_PG_BIN, then PATH, then the
// Debian location of version 15.
func BinDir() (string, error) {
	if d := os.Getenv("RESHARD_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
		return "", fmt.Errorf("%w (RESHARD_PG_BIN=%s has no pg_ctl)", ErrNoServer, d)
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return filepath.Dir(p), nil
	}
	for _, d := range []string{"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"} {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoServer
}

// asRoot reports whether server commands must be run as the postgres user.
func asRoot() bool { return os.Geteuid() == 0 }

// command builds an exec.Cmd for a server binary, through runuser when we are root.
func command(ctx context.Context, bin, name string, args ...string) *exec.Cmd {
	path := filepath.Join(bin, name)
	if asRoot() {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.CommandContext(ctx, path, args...)
}

func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// The server must not die with us (dev stack) nor get our terminal's signals.
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// chownPostgres hands path (recursively) to the postgres user when we are root.
func chownPostgres(path string) error {
	if !asRoot() {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgcluster: running as root needs a 'postgres' user to run the server: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// template returns the data folder to copy for a new cluster. It is made by initdb once per
// machine, user and server version, in a folder of the temp dir shared by every process:
// built under a private name and renamed into place, so concurrent test binaries never see
// half of one, and none is left behind per process.
func template(ctx context.Context, bin string) (string, error) {
	templateOnce.Do(func() {
		version, err := exec.CommandContext(ctx, filepath.Join(bin, "pg_ctl"), "--version").Output()
		if err != nil {
			templateErr = fmt.Errorf("pgcluster: %s --version: %w", filepath.Join(bin, "pg_ctl"), err)
			return
		}
		h := fnv.New64a()
		fmt.Fprintf(h, "%s\n%s\n%d\n", bin, version, os.Geteuid())
		final := filepath.Join(os.TempDir(), fmt.Sprintf("reshard-pgtemplate-%x", h.Sum64()))
		if _, err := os.Stat(filepath.Join(final, "data", "PG_VERSION")); err == nil {
			templateDir = filepath.Join(final, "data")
			return
		}
		dir, err := os.MkdirTemp("", "reshard-pgtemplate-build-")
		if err != nil {
			templateErr = err
			return
		}
		defer os.RemoveAll(dir) // gone once renamed; removes a failed build
		if err := os.Chmod(dir, 0o755); err != nil {
			templateErr = err
			return
		}
		if err := chownPostgres(dir); err != nil {
			templateErr = err
			return
		}
		cmd := command(ctx, bin, "initdb", "-N", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
		if err := run(cmd); err != nil {
			templateErr = fmt.Errorf("pgcluster: initdb: %w", err)
			return
		}
		if err := os.Rename(dir, final); err != nil {
			// Another process won the race: use its template.
			if _, serr := os.Stat(filepath.Join(final, "data", "PG_VERSION")); serr != nil {
				templateErr = fmt.Errorf("pgcluster: keep initdb template: %w", err)
				return
			}
		}
		templateDir = filepath.Join(final, "data")
	})
	return templateDir, templateErr
}

// RemoveTemplate is kept for callers of the per-process template of earlier versions; the
// shared template stays for the next process.
func RemoveTemplate() {}

// Create makes a new cluster in dir (which must not exist or be empty) and writes its
// configuration. It does not start it.
func Create(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	tmpl, err := template(ctx, bin)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The postgres user must be able to reach the folder through every parent.
	for p := dir; p != "/" && p != "." && asRoot(); p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			if strings.HasPrefix(p, os.TempDir()) || p == dir {
				_ = os.Chmod(p, fi.Mode().Perm()|0o055)
			}
		}
	}
	data := filepath.Join(dir, "data")
	if err := run(exec.CommandContext(ctx, "cp", "-a", tmpl, data)); err != nil {
		return nil, fmt.Errorf("pgcluster: copy template: %w", err)
	}
	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	conf := map[string]string{
		"listen_addresses":          "'127.0.0.1'",
		"port":                      strconv.Itoa(port),
		"unix_socket_directories":   "''",
		"wal_level":                 "logical",
		"max_wal_senders":           "20",
		"max_replication_slots":     "20",
		"max_connections":           "200",
		"shared_buffers":            "128MB",
		"max_wal_size":              "1GB",
		"wal_sender_timeout":        "60s",
		"logical_decoding_work_mem": "64MB",
		"log_min_messages":          "warning",
		"log_line_prefix":           "'%m [%p] '",
		"timezone":                  "'UTC'",
	}
	if !opts.Durable {
		conf["fsync"] = "off"
		conf["synchronous_commit"] = "off"
		conf["full_page_writes"] = "off"
	}
	for k, v := range opts.Settings {
		conf[k] = v
	}
	var b strings.Builder
	b.WriteString("\n# written by reshard\n")
	for _, k := range sortedKeys(conf) {
		fmt.Fprintf(&b, "%s = %s\n", k, conf[k])
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := chownPostgres(dir); err != nil {
		return nil, err
	}
	return &Cluster{Dir: dir, Port: port, bin: bin}, nil
}

// Start starts the server and waits until it accepts connections. The server is its own
// process group leader, so it outlives the calling process.
func (c *Cluster) Start(ctx context.Context) error {
	if !PortFree(c.Port) {
		return fmt.Errorf("%w: 127.0.0.1:%d (pick another port or stop what listens there)", ErrPortInUse, c.Port)
	}
	logf := c.LogFile()
	if f, err := os.OpenFile(logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		f.Close()
		_ = chownPostgres(logf)
	}
	cmd := command(ctx, c.bin, "pg_ctl", "start", "-w", "-t", "60", "-D", c.DataDir(), "-l", logf)
	cmd.SysProcAttr = detached()
	if err := run(cmd); err != nil {
		tail, _ := os.ReadFile(logf)
		return fmt.Errorf("pgcluster: start %s: %w\n%s", c.Dir, err, lastLines(string(tail), 10))
	}
	return nil
}

// Stop stops the server (fast mode); stopping a stopped server is not an error.
func (c *Cluster) Stop(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	cmd := command(ctx, c.bin, "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", c.DataDir())
	return run(cmd)
}

// Restart stops and starts the server (fault tests restart a source mid-move).
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.Stop(ctx); err != nil {
		return err
	}
	return c.Start(ctx)
}

// Running reports whether the server's postmaster.pid exists and pg_ctl says it runs.
func (c *Cluster) Running(ctx context.Context) bool {
	return command(ctx, c.bin, "pg_ctl", "status", "-D", c.DataDir()).Run() == nil
}

// Destroy stops the server and removes the cluster's folder.
func (c *Cluster) Destroy(ctx context.Context) error {
	err := c.Stop(ctx)
	if rerr := os.RemoveAll(c.Dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PortFree reports whether nothing listens on 127.0.0.1:port.
func PortFree(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err == nil {
		c.Close()
		return false
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
