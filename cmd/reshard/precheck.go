package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/migrate"
	"github.com/reshard/reshard/mover"
)

// checkMove checks everything that can refuse a new move of r to shard `to` as migration
// id, reading only, so that a refused move writes nothing (no split, no journal, no slot,
// publication or trigger): the target shard exists and is not the owner; r lies in one
// serving catalog range that no unfinished migration moves; and the mover's preflight
// passes (both shards reachable, tables and replica identity, no rows of r on the target
// unless --overwrite). A move of r to its owner gives migrate.ErrNothingToDo.
func checkMove(ctx context.Context, st *catalog.State, r catalog.KeyRange, to, id string, f *execFlags) error {
	owner, err := ownerOf(st, r)
	if err != nil {
		return err
	}
	dst, ok := st.Shards[to]
	if !ok {
		return fmt.Errorf("unknown target shard %q: the shards are %s (see reshard shard list)", to, shardNames(st))
	}
	if to == owner.Shard {
		return fmt.Errorf("range %s is on %s: %w", r, to, migrate.ErrNothingToDo)
	}
	if err := unfinishedOverlap(st, r); err != nil {
		return err
	}
	srcDSN, err := st.Shards[owner.Shard].ConnString()
	if err != nil {
		return err
	}
	dstDSN, err := dst.ConnString()
	if err != nil {
		return err
	}
	err = mover.Preflight(ctx, mover.Config{ID: id, SourceDSN: srcDSN, TargetDSN: dstDSN,
		Key: st.Config.Key, Tables: st.Config.Tables, Range: r,
		Workers: f.workers, MaxConnections: f.maxConns, Overwrite: f.overwrite})
	return oneLine(err)
}

// ownerOf is the serving catalog range that holds all of r (Carve's conditions).
func ownerOf(st *catalog.State, r catalog.KeyRange) (catalog.Range, error) {
	owner, ok := st.Owner(r.Lo)
	switch {
	case !ok:
		return owner, fmt.Errorf("range %s: no catalog range holds key %d", r, r.Lo)
	case !owner.Range.Covers(r):
		return owner, fmt.Errorf("range %s spans several catalog ranges (it starts in %s): move each range separately", r, owner.Range)
	case owner.State != catalog.RangeServing:
		return owner, fmt.Errorf("range %s is %s (migration %s): wait for it or cancel it", owner.Range, owner.State, owner.Migration)
	}
	return owner, nil
}

// unfinishedOverlap refuses r when a migration that has not flipped moves keys of r: two
// movers of one key would each copy it and fence it.
func unfinishedOverlap(st *catalog.State, r catalog.KeyRange) error {
	ids := make([]string, 0, len(st.Migrations))
	for id := range st.Migrations {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := st.Migrations[id]
		if m.Terminal() || m.Phase == catalog.PhaseFlipped || m.Phase == catalog.PhaseCleaningUp || !m.Range.Overlaps(r) {
			continue
		}
		return fmt.Errorf("range %s overlaps migration %s (%s), which moves %s from %s to %s: wait for it, or cancel it (reshard cancel %s)",
			r, id, m.Phase, m.Range, m.Source, m.Target, id)
	}
	return nil
}

func shardNames(st *catalog.State) string {
	names := make([]string, 0, len(st.Shards))
	for n := range st.Shards {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// oneLine puts a preflight's single problem (or a connection error spread over lines) on
// one line; several problems stay a list.
func oneLine(err error) error {
	var pe *mover.PreflightError
	if errors.As(err, &pe) && len(pe.Problems) == 1 {
		return fmt.Errorf("move refused (nothing was changed): %s", strings.Join(strings.Fields(pe.Problems[0]), " "))
	}
	return err
}
