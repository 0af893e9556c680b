package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/mover"
)

// execFlags are the flags of the commands that run migrations (move, split --to, apply).
type execFlags struct {
	workers          int
	maxConns         int
	maxRate          int64
	maxSourceLag     int64
	maxCutoverLag    int64
	stragglerTimeout time.Duration
	killStragglers   bool
	catchupTimeout   time.Duration
	maxWindow        time.Duration
	diffOut          string
	noVerify         bool
	cleanup          string
	deleteBatch      int
	deletePause      time.Duration
	retries          int
	overwrite        bool
	lockTTL          int
	metrics          metricsFlag
}

func (f *execFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.IntVar(&f.workers, "workers", 4, "copy workers per move")
	fs.IntVar(&f.maxConns, "max-connections", 8, "connections per shard a move may open (copy workers, apply, control)")
	// Sizes take units (50MB, 1MiB) or a plain byte count, as durations take theirs.
	f.maxRate, f.maxSourceLag, f.maxCutoverLag = 0, 1<<30, 1<<20
	fs.Var(bytesize.NewValue(&f.maxRate), "max-rate", "bytes per second for copy and apply, e.g. 50MB (0: unlimited)")
	fs.Var(bytesize.NewValue(&f.maxSourceLag), "max-source-lag", "pause the copy while the source's replication slots retain more WAL than this (0: off)")
	fs.Var(bytesize.NewValue(&f.maxCutoverLag), "max-cutover-lag", "start the cutover once the catch-up lag is under this size")
	fs.DurationVar(&f.stragglerTimeout, "straggler-timeout", 5*time.Second, "how long the cutover waits for transactions older than the fence")
	fs.BoolVar(&f.killStragglers, "kill-stragglers", false, "terminate transactions older than the fence after --straggler-timeout instead of retrying")
	fs.DurationVar(&f.catchupTimeout, "catchup-timeout", 30*time.Second, "how long the cutover waits for the fence LSN to be applied")
	fs.DurationVar(&f.maxWindow, "max-window", 500*time.Millisecond, "freeze only once the predicted write window is under this (otherwise keep catching up, at most --catchup-timeout)")
	fs.BoolVar(&f.noVerify, "no-verify", false, "skip the row count and hash comparison before the flip")
	fs.StringVar(&f.diffOut, "diff-out", "", "write every key the online verify finds different to this file")
	fs.StringVar(&f.cleanup, "cleanup", "now", "delete the moved rows from the source now, or later (reshard cleanup ID)")
	fs.IntVar(&f.deleteBatch, "delete-batch", 5000, "rows per DELETE when cleaning the source")
	fs.DurationVar(&f.deletePause, "delete-pause", 10*time.Millisecond, "pause between cleanup batches")
	fs.IntVar(&f.retries, "cutover-retries", 3, "retries of a cutover undone for a transient reason (stragglers, catch-up timeout)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "allow (and delete) rows of the range already on the target")
	fs.IntVar(&f.lockTTL, "lock-ttl", 10, "seconds before a dead driver's migration lock expires")
	f.metrics.register(cmd)
}

// run checks the flags, then runs fn as metricsFlag.run does (serving --metrics meanwhile).
func (f *execFlags) run(cmd *cobra.Command, fn func(ctx context.Context) error) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.metrics.run(cmd, fn)
}

func (f *execFlags) check() error {
	if f.cleanup != "now" && f.cleanup != "later" {
		return fmt.Errorf("--cleanup %q: use now or later", f.cleanup)
	}
	return nil
}

// newExecutor builds the executor behind move, split --to, apply, cancel and cleanup.
// progress, if set, draws each migration's progress (its mover's callback, its phases).
func newExecutor(store *catalog.Store, st *catalog.State, f *execFlags, progress *progressBars, log *slog.Logger) *migrate.Executor {
	lockTTL := f.lockTTL
	ex := &migrate.Executor{
		Catalog: store,
		DSN:     catalog.Shard.ConnString,
		Log:     log,
		Lock: func(ctx context.Context, id string) (*catalog.Lock, error) {
			// The error names the migration and the holder.
			return store.TryLockMigration(ctx, id, catalog.WithTTL(lockTTL))
		},
		NewMover: func(m *catalog.Migration, src, dst string, j *migrate.Journal, token int64) (migrate.Mover, error) {
			p := withMetrics(progress.forID(m.ID), f.metrics.m)
			return mover.New(mover.Config{
				ID: m.ID, SourceDSN: src, TargetDSN: dst,
				Keys: st.Config.Keyspace(), Tables: st.Config.Tables, Range: m.Range,
				Workers: f.workers, MaxConnections: f.maxConns, MaxRate: f.maxRate, MaxSourceLag: f.maxSourceLag,
				Overwrite: f.overwrite, Token: token, Progress: p, Logger: log,
			}, j)
		},
		Preflight: func(ctx context.Context, m *catalog.Migration, src, dst string) error {
			return mover.Preflight(ctx, mover.Config{ID: m.ID, SourceDSN: src, TargetDSN: dst,
				Keys: st.Config.Keyspace(), Tables: st.Config.Tables, Range: m.Range,
				Workers: f.workers, MaxConnections: f.maxConns, Overwrite: f.overwrite})
		},
		Options: migrate.ExecOptions{
			Cutover: cutover.Options{
				StragglerTimeout: f.stragglerTimeout, KillStragglers: f.killStragglers,
				CatchupTimeout: f.catchupTimeout, SkipVerify: f.noVerify, MaxWindow: f.maxWindow,
			},
			MaxCutoverLag:  f.maxCutoverLag,
			CleanupLater:   f.cleanup == "later",
			Delete:         cutover.DeleteOptions{BatchRows: f.deleteBatch, Pause: f.deletePause},
			CutoverRetries: f.retries,
		},
	}
	ex.Observer = observers(f.metrics.m, progress)
	if f.diffOut != "" {
		ex.Options.Cutover.Online.DiffOut = &lazyFile{path: f.diffOut}
	}
	if hold := testHold(); hold != nil {
		ex.Options.Cutover.AfterStep = hold
		ex.Options.BeforeCutover = func() { hold("catch-up") }
		ex.Options.BeforeCleanup = func() { hold("cleanup") }
	}
	return ex
}

// testHold is a fault-injection point for the end-to-end tests, off unless
// RESHARD_TEST_HOLD names cutover steps, comma-separated (or "catch-up": the target is
// caught up and the cutover is about to start; or "cleanup": the cutover is over and the
// cleanup starts): after such a step the driver says so on stderr and waits while the file
// RESHARD_TEST_HOLD_FILE, or that name followed by "." and the step, exists, so a test can
// kill it, stop etcd or look at it at exactly that point.
func testHold() func(string) {
	steps, file := os.Getenv("RESHARD_TEST_HOLD"), os.Getenv("RESHARD_TEST_HOLD_FILE")
	if steps == "" || file == "" {
		return nil
	}
	return func(s string) {
		if !slices.Contains(strings.Split(steps, ","), s) {
			return
		}
		fmt.Fprintf(os.Stderr, "reshard-test: holding after %s\n", s)
		for {
			_, err := os.Stat(file)
			_, errStep := os.Stat(file + "." + s)
			if err != nil && errStep != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// lazyFile creates its file on the first write: --diff-out leaves no file when the online
// verify finds nothing different. Each line is written through at once.
type lazyFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (l *lazyFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		f, err := os.Create(l.path)
		if err != nil {
			return 0, err
		}
		l.f = f
	}
	return l.f.Write(p)
}
