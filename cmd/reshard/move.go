package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/migrate"
)

// moveReport is what `move -o json` and `status -o json` print for a migration.
type moveReport struct {
	catalog.MigrationHead
	RowsCopied   int64           `json:"rows_copied"`
	BytesCopied  int64           `json:"bytes_copied"`
	RowsVerified int64           `json:"rows_verified"`
	AppliedLSN   string          `json:"applied_lsn,omitempty"`
	FenceLSN     string          `json:"fence_lsn,omitempty"`
	LagBytes     int64           `json:"lag_bytes"`
	LagSeconds   float64         `json:"lag_seconds"`
	Timings      catalog.Timings `json:"timings"`
	Plan         string          `json:"plan,omitempty"`
	Created      time.Time       `json:"created"`
	Updated      time.Time       `json:"updated"`
	LastError    string          `json:"last_error,omitempty"`
	// Verify: the online verification, the rows the window compared, the prediction.
	Verify *catalog.Verification `json:"verify,omitempty"`
}

func reportOf(m *catalog.Migration) moveReport {
	return moveReport{
		MigrationHead: m.Head(), RowsCopied: m.RowsCopied, BytesCopied: m.BytesCopied, RowsVerified: m.RowsVerified,
		AppliedLSN: m.AppliedLSN, FenceLSN: m.FenceLSN, LagBytes: m.LagBytes, LagSeconds: m.LagSeconds,
		Timings: m.Timings, Plan: m.Plan, Created: m.Created, Updated: m.Updated, LastError: m.LastError,
		Verify: m.Verify,
	}
}

func printReport(w io.Writer, m *catalog.Migration) error {
	return result.print(w, reportOf(m), func() error {
		fmt.Fprintf(w, "migration %s: %s %s -> %s: %s\n", m.ID, m.Range, m.Source, m.Target, m.Phase)
		fmt.Fprintf(w, "  copied %d rows (%s), verified %d rows\n", m.RowsCopied, bytesize.Format(m.BytesCopied), m.RowsVerified)
		t := m.Timings
		fmt.Fprintf(w, "  copy %.2fs, catch-up %.2fs, cutover window %.1fms%s, cleanup %.2fs\n", t.Copy, t.Catchup, t.CutoverWindow*1000, predicted(m), t.Cleanup)
		if len(t.Window) > 0 {
			steps := make([]string, len(t.Window))
			for i, s := range t.Window {
				steps[i] = fmt.Sprintf("%s %.1fms", s.Step, s.Seconds*1000)
			}
			fmt.Fprintf(w, "  window steps: %s\n", strings.Join(steps, ", "))
		}
		if v := m.Verify; v != nil && v.LSN != "" {
			fmt.Fprintf(w, "  verified %d rows online at %s (%.2fs); in the window %d rows changed since (%d changes)\n",
				v.OnlineRows, v.LSN, v.OnlineSeconds, v.WindowRows, v.ChangedSince)
		}
		if m.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", m.LastError)
		}
		return nil
	})
}

// reportMigration prints m, if the executor got as far as one, even when err is set: the
// operator sees where the migration stopped. err wins over a failure to print.
func reportMigration(w io.Writer, m *catalog.Migration, err error) error {
	if m != nil {
		if perr := printReport(w, m); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// resumable refuses `move --id` of a migration that moves another range or to another
// shard, or that ended without moving its range (rolled back or cancelled): running it
// again would only print its old outcome, and a script could not tell that nothing moved.
// A done migration is fine: it did move.
func resumable(m *catalog.Migration, r catalog.KeyRange, to string) error {
	if !m.Range.Equal(r) || m.Target != to {
		return fmt.Errorf("migration %s moves %s from %s to %s, not %s to %s: use another id (or leave --id out)", m.ID, m.Range, m.Source, m.Target, r, to)
	}
	if err := migrate.EndedUnmoved(m); err != nil {
		return fmt.Errorf("%w: to move %s to %s, run reshard move --range %s --to %s without --id (or with a new id)", err, r, to, r, to)
	}
	return nil
}

// newID makes a migration id: it names the slot and publication, so lower-case only.
func newID(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s%s_%s", prefix, time.Now().UTC().Format("20060102t150405"), hex.EncodeToString(b))
}

func newMoveCmd() *cobra.Command {
	var (
		rangeStr, to, id string
		f                execFlags
	)
	cmd := &cobra.Command{
		Use:   "move --range LO:HI --to SHARD",
		Short: "Move one key range to another shard (copy, catch up, cutover, cleanup)",
		Long: `Moves the tenants of one key range to another shard while the application keeps writing.
If the range is part of a catalog range, that range is split first (both parts stay where they
are), then the part moves. Re-running with the same --id resumes an interrupted move; for a
move that is done it prints the result (exit 0); for one that was rolled back or cancelled it
exits 1 with the reason: move again without --id.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				id = newID("m")
			}
			logErrorsWith("migration", id)
			return f.run(cmd, func(ctx context.Context) error {
				r, err := catalog.ParseRange(rangeStr)
				if err != nil {
					return err
				}
				if to == "" {
					return errors.New("--to SHARD is required: the shard the range moves to")
				}
				return withCatalog(ctx, func(store *catalog.Store, st *catalog.State) error {
					bars := newProgressBars(cmd.ErrOrStderr())
					ex := newExecutor(store, st, &f, bars, newLogger())
					existing, err := store.GetMigration(ctx, id)
					switch {
					case errors.Is(err, catalog.ErrNotFound):
						// Everything that can refuse the move, before the first write.
						if err := ex.CheckMove(ctx, st, r, to, id); err != nil {
							return err
						}
						if _, err = migrate.Carve(ctx, store, r); err != nil {
							return err
						}
					case err != nil:
						return err
					default:
						if err := resumable(existing, r, to); err != nil {
							return err
						}
					}
					m, err := ex.Move(ctx, migrate.MoveRequest{ID: id, Range: r, Target: to})
					bars.finish()
					return reportMigration(cmd.OutOrStdout(), m, err)
				})
			})
		},
	}
	cmd.Flags().StringVar(&rangeStr, "range", "", "the key range to move, LO:HI (an empty side is unbounded)")
	cmd.Flags().StringVar(&to, "to", "", "target shard")
	cmd.Flags().StringVar(&id, "id", "", "migration id (default: generated); an existing id resumes that migration")
	f.register(cmd)
	_ = cmd.MarkFlagRequired("range")
	return cmd
}

// predicted is the window predicted before the freeze, to print beside the measured one.
func predicted(m *catalog.Migration) string {
	if m.Verify == nil || m.Verify.PredictedWindow <= 0 {
		return ""
	}
	return fmt.Sprintf(" (predicted %.1fms)", m.Verify.PredictedWindow*1000)
}
