package migrate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/mover"
)

// CheckMove checks everything that can refuse a new move of r to shard `to` as migration
// id, reading only, so that a refused move writes nothing (no split, no journal, no slot,
// publication or trigger): the target shard exists and is not the owner; r lies in one
// serving catalog range that no unfinished migration moves; and the mover's preflight
// (e.Preflight) passes. A move of r to its owner gives ErrNothingToDo.
func (e *Executor) CheckMove(ctx context.Context, st *catalog.State, r catalog.KeyRange, to, id string) error {
	owner, err := ownerOf(st, r)
	if err != nil {
		return err
	}
	dst, ok := st.Shards[to]
	if !ok {
		return fmt.Errorf("unknown target shard %q: the shards are %s (see reshard shard list)", to, shardNames(st))
	}
	if to == owner.Shard {
		return fmt.Errorf("range %s is on %s: %w", r, to, ErrNothingToDo)
	}
	if err := unfinishedOverlap(st, r); err != nil {
		return err
	}
	if e.Preflight == nil {
		return nil
	}
	srcDSN, err := e.DSN(st.Shards[owner.Shard])
	if err != nil {
		return err
	}
	dstDSN, err := e.DSN(dst)
	if err != nil {
		return err
	}
	m := &catalog.Migration{ID: id, Kind: catalog.KindMove, Range: r, Source: owner.Shard, Target: to, Phase: catalog.PhasePlanned}
	return oneLine(e.Preflight(ctx, m, srcDSN, dstDSN), m)
}

// holder is the catalog range that holds all of r.
func holder(st *catalog.State, r catalog.KeyRange) (catalog.Range, error) {
	owner, ok := st.Owner(r.Lo)
	switch {
	case !ok:
		return owner, fmt.Errorf("range %s: no catalog range holds key %d", r, r.Lo)
	case !owner.Range.Covers(r):
		return owner, fmt.Errorf("range %s spans several catalog ranges (it starts in %s): move each range separately", r, owner.Range)
	}
	return owner, nil
}

// ownerOf is the serving catalog range that holds all of r (Carve's conditions).
func ownerOf(st *catalog.State, r catalog.KeyRange) (catalog.Range, error) {
	owner, err := holder(st, r)
	if err != nil {
		return owner, err
	}
	return owner, notServing(owner)
}

// notServing refuses a catalog range that a migration has frozen.
func notServing(owner catalog.Range) error {
	if owner.State != catalog.RangeServing {
		return fmt.Errorf("range %s is %s (migration %s): wait for it or cancel it", owner.Range, owner.State, owner.Migration)
	}
	return nil
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
// one line; several problems stay a list. Either way it names m's shards, which the
// problems call only source and target.
func oneLine(err error, m *catalog.Migration) error {
	var pe *mover.PreflightError
	if errors.As(err, &pe) && len(pe.Problems) == 1 {
		return fmt.Errorf("move of %s from %s to %s refused (nothing was changed): %s", m.Range, m.Source, m.Target, strings.Join(strings.Fields(pe.Problems[0]), " "))
	}
	if pe != nil {
		return fmt.Errorf("move of %s from %s to %s: %w", m.Range, m.Source, m.Target, err)
	}
	return err
}

// EndedUnmoved says, with the journal's reason, that m was rolled back or cancelled (nil
// for any other phase): a re-run of it would only print its old outcome.
func EndedUnmoved(m *catalog.Migration) error {
	var how string
	switch m.Phase {
	case catalog.PhaseRolledBack:
		how = "was rolled back"
	case catalog.PhaseCancelled:
		how = "was cancelled"
	default:
		return nil
	}
	why := strings.Join(strings.Fields(m.LastError), " ")
	if why == "" {
		why = "no reason recorded"
	}
	return fmt.Errorf("migration %s %s and moved nothing (%s)", m.ID, how, why)
}
