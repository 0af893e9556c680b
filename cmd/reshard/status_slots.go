package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/bytesize"
	"github.com/reshard/reshard/mover"
)

// slotStatus is the replication slot of an unfinished migration on its source: the WAL it
// keeps there grows without bound while nobody consumes it.
type slotStatus struct {
	Name   string `json:"name"`
	Shard  string `json:"shard"`
	Active bool   `json:"active"`
	// RetainedBytes is pg_current_wal_lsn() - restart_lsn; -1 when the slot has no
	// restart_lsn (its WAL is lost).
	RetainedBytes int64  `json:"retained_bytes"`
	WALStatus     string `json:"wal_status"`
	// SafeWALSize is how much more WAL may be written before the slot is invalidated;
	// null without max_slot_wal_keep_size (no limit: the disk is the limit).
	SafeWALSize *int64 `json:"safe_wal_size"`
}

// migrationStatus is one line of `reshard status -o json`: the migration's report, and
// for an unfinished one its slot and whether anyone is running it.
type migrationStatus struct {
	moveReport
	Slot       *slotStatus `json:"slot,omitempty"`
	Driver     string      `json:"driver,omitempty"` // the lock holder's description
	Abandoned  bool        `json:"abandoned,omitempty"`
	Advice     string      `json:"advice,omitempty"`
	CheckError string      `json:"check_error,omitempty"`
}

// migrationStatuses reports ms, looking up the slot and the driver of each unfinished one.
func migrationStatuses(ctx context.Context, store *catalog.Store, ms []catalog.Migration) []migrationStatus {
	out := make([]migrationStatus, len(ms))
	bySource := map[string][]*migrationStatus{}
	for i := range ms {
		m := &ms[i]
		s := &out[i]
		s.moveReport = reportOf(m)
		if m.Terminal() {
			continue
		}
		holder, held, err := store.MigrationLockHolder(ctx, m.ID)
		switch {
		case err != nil:
			s.CheckError = err.Error()
		case held:
			s.Driver = holder
			if s.Driver == "" {
				s.Driver = "(starting)"
			}
		case m.Phase != catalog.PhaseCleaningUp: // cleaning_up without a driver: `cleanup` is awaited
			s.Abandoned = true
		}
		bySource[m.Source] = append(bySource[m.Source], s)
	}
	if len(bySource) == 0 {
		return out
	}
	st, err := store.Load(ctx)
	for shard, ss := range bySource {
		if err == nil {
			err = readSlots(ctx, st, shard, ss, ms)
		}
		if err != nil {
			for _, s := range ss {
				s.CheckError = joinErr(s.CheckError, fmt.Sprintf("cannot read the slots on %s: %v", shard, err))
			}
			err = nil
		}
	}
	for i := range out {
		out[i].Advice = advice(&ms[i], &out[i])
	}
	return out
}

// readSlots fills in the slots of ss, migrations whose source is shard.
func readSlots(ctx context.Context, st *catalog.State, shard string, ss []*migrationStatus, ms []catalog.Migration) error {
	sh, ok := st.Shards[shard]
	if !ok {
		return fmt.Errorf("shard %s is not in the catalog", shard)
	}
	dsn, err := sh.ConnString()
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("bad connection string %s: %w", catalog.MaskDSN(dsn), err)
	}
	cfg.ConnectTimeout = 5 * time.Second
	cfg.RuntimeParams["application_name"] = "reshard/status"
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	names := map[string]*migrationStatus{}
	var list []string
	for _, s := range ss {
		name := slotName(ms, s.ID)
		names[name] = s
		list = append(list, name)
	}
	rows, err := conn.Query(cctx, `SELECT slot_name, active, coalesce(wal_status, ''), safe_wal_size,
		coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, -1)
		FROM pg_replication_slots WHERE slot_name = ANY($1)`, list)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		sl := &slotStatus{Shard: shard}
		if err := rows.Scan(&sl.Name, &sl.Active, &sl.WALStatus, &sl.SafeWALSize, &sl.RetainedBytes); err != nil {
			return err
		}
		names[sl.Name].Slot = sl
	}
	return rows.Err()
}

// slotName is the slot migration id uses: the journal's, or the mover's naming rule when
// the driver died before journaling it.
func slotName(ms []catalog.Migration, id string) string {
	for _, m := range ms {
		if m.ID == id && m.Slot != "" {
			return m.Slot
		}
	}
	slot, _ := mover.Names(id)
	return slot
}

// advice says what an operator should do about an unfinished migration nobody runs, or
// whose slot lost its WAL.
func advice(m *catalog.Migration, s *migrationStatus) string {
	rerun := fmt.Sprintf("re-run it (reshard move --id %s --range %s --to %s, or the apply that started it)", m.ID, m.Range, m.Target)
	switch {
	case s.Slot != nil && s.Slot.WALStatus == "lost":
		return fmt.Sprintf("its slot has lost WAL the catch-up needs: it cannot resume; reshard cancel %s, then move again", m.ID)
	case !s.Abandoned:
		return ""
	case m.Phase == catalog.PhaseFlipped:
		return fmt.Sprintf("no driver holds its lock, so nobody is finishing it: %s or reshard cleanup %s", rerun, m.ID)
	case s.Slot != nil:
		return fmt.Sprintf("no driver holds its lock, so nobody is running it and its slot keeps WAL on %s until it is resumed or cancelled: %s or reshard cancel %s", s.Slot.Shard, rerun, m.ID)
	}
	return fmt.Sprintf("no driver holds its lock, so nobody is running it: %s or reshard cancel %s", rerun, m.ID)
}

// printSlots writes, under the status table, each unfinished migration's slot and what to
// do about one nobody runs.
func printSlots(w io.Writer, ss []migrationStatus) {
	for _, s := range ss {
		if sl := s.Slot; sl != nil {
			retained := bytesize.Format(sl.RetainedBytes)
			if sl.RetainedBytes < 0 {
				retained = "an unknown amount"
			}
			active, safe := "inactive", "unlimited"
			if sl.Active {
				active = "active"
			}
			if sl.SafeWALSize != nil {
				safe = bytesize.Format(*sl.SafeWALSize)
			}
			fmt.Fprintf(w, "%s: slot %s on %s retains %s of WAL (%s, wal_status %s, safe_wal_size %s)\n", s.ID, sl.Name, sl.Shard, retained, active, sl.WALStatus, safe)
		}
		if s.Advice != "" {
			fmt.Fprintf(w, "%s: %s\n", s.ID, s.Advice)
		}
		if s.CheckError != "" {
			fmt.Fprintf(w, "%s: %s\n", s.ID, s.CheckError)
		}
	}
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
