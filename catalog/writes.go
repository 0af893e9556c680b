package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Writes that take a *State compare the mod revisions recorded in it. On success they
// update the State to what was written (ranges, ModRev, Revision), so it can be passed to
// the next write; on ErrConflict it is left as it was: Load again.

// Init writes a new catalog: config, shards and ranges (nil ranges: catalog.EvenRanges over
// the shards in the given order). Without force it fails with ErrExists when anything of the
// cluster is in etcd; with force it replaces config, shards, ranges, stats and migrations,
// and keeps the history (an init event records the re-initialisation) and the locks.
func (s *Store) Init(ctx context.Context, cfg Config, shards []Shard, ranges []Range, force bool) error {
	if cfg.Cluster == "" {
		cfg.Cluster = s.cluster
	}
	if cfg.Cluster != s.cluster {
		return fmt.Errorf("%w: the config names cluster %q but the store is for %q: pass --cluster %s or fix the file", ErrInvalid, cfg.Cluster, s.cluster, cfg.Cluster)
	}
	st, err := newState(cfg, shards, append([]Range(nil), ranges...), s.now().UTC())
	if err != nil {
		return err
	}
	desired := map[string]any{keyConfig: st.Config}
	for _, sh := range st.Shards {
		desired[ShardKey(sh.Name)] = sh
	}
	for _, r := range st.Ranges {
		desired[RangeKey(r.Range.Lo)] = r
	}
	detail := fmt.Sprintf("%d shards, %d ranges", len(st.Shards), len(st.Ranges))
	if force {
		detail += " (re-initialised with --force)"
	}
	ev := Event{Kind: EventInit, Detail: detail}
	keep := func(rel string) bool { return strings.HasPrefix(rel, pfxHistory) || rel == keySeq }
	if err := s.replace(ctx, desired, keep, force, []Event{ev}); err != nil {
		return fmt.Errorf("init cluster %s: %w", s.cluster, err)
	}
	return nil
}

// newState builds and validates a catalog from its parts.
func newState(cfg Config, shards []Shard, ranges []Range, now time.Time) (*State, error) {
	var p Problems
	if err := ValidateConfig(cfg); err != nil {
		p = append(p, problemsOf(err)...)
	}
	st := &State{Config: cfg, Shards: map[string]Shard{}, ModRev: map[string]int64{}}
	names := make([]string, 0, len(shards))
	if len(shards) == 0 {
		p.add("no shards: list at least one under shards:")
	}
	for _, sh := range shards {
		if sh.State == "" {
			sh.State = ShardActive
		}
		if sh.Added.IsZero() {
			sh.Added = now
		}
		if err := ValidateShard(sh); err != nil {
			p = append(p, problemsOf(err)...)
		}
		if _, dup := st.Shards[sh.Name]; dup {
			p.add("shard %q listed twice", sh.Name)
		}
		st.Shards[sh.Name] = sh
		names = append(names, sh.Name)
	}
	if ranges == nil && len(names) > 0 {
		ranges = EvenRanges(names)
	}
	for i := range ranges {
		if ranges[i].State == "" {
			ranges[i].State = RangeServing
		}
		if ranges[i].Epoch == 0 {
			ranges[i].Epoch = 1
		}
	}
	if len(names) > 0 || len(ranges) > 0 {
		if err := ValidateRanges(ranges, st.Shards); err != nil {
			p = append(p, problemsOf(err)...)
		}
	}
	for _, r := range ranges {
		if r.State == RangeFrozen {
			p.add("range %s is frozen: a new catalog starts with every range serving", r.Range)
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	st.Ranges = append([]Range(nil), ranges...)
	sort.Slice(st.Ranges, func(i, j int) bool { return st.Ranges[i].Range.Lo < st.Ranges[j].Range.Lo })
	return st, nil
}

// AddShard adds a shard (state active). It fails with ErrExists if the name is taken.
func (s *Store) AddShard(ctx context.Context, sh Shard) error {
	if sh.State == "" {
		sh.State = ShardActive
	}
	if sh.Added.IsZero() {
		sh.Added = s.now().UTC()
	}
	if err := ValidateShard(sh); err != nil {
		return err
	}
	var w write
	w.cmps = append(w.cmps, clientv3.Compare(clientv3.CreateRevision(s.key(keyConfig)), "!=", 0))
	w.cmpRev(s, ShardKey(sh.Name), 0)
	if err := w.put(s, ShardKey(sh.Name), sh); err != nil {
		return err
	}
	w.events = append(w.events, Event{Kind: EventShardAdded, Shard: sh.Name, Detail: MaskDSN(sh.DSN) + envDetail(sh.DSNEnv)})
	if _, err := s.commit(ctx, &w); err != nil {
		if errors.Is(err, ErrConflict) {
			return s.whyAddFailed(ctx, sh.Name)
		}
		return fmt.Errorf("add shard %s: %w", sh.Name, err)
	}
	return nil
}

func envDetail(env string) string {
	if env == "" {
		return ""
	}
	return "dsn from $" + env
}

func (s *Store) whyAddFailed(ctx context.Context, name string) error {
	resp, err := s.read(ctx, clientv3.OpGet(s.key(keyConfig), clientv3.WithCountOnly()), clientv3.OpGet(s.key(ShardKey(name)), clientv3.WithCountOnly()))
	if err != nil {
		return fmt.Errorf("add shard %s: %w", name, s.wrapEtcd(err))
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return fmt.Errorf("add shard %s: %w", name, s.notFoundCatalog())
	}
	if resp.Responses[1].GetResponseRange().Count > 0 {
		return fmt.Errorf("add shard %s: shard %q %w (see `reshard shard list`)", name, name, ErrExists)
	}
	return fmt.Errorf("add shard %s: %w", name, ErrConflict)
}

// SetShardState sets a shard active or draining (the planner empties draining shards).
func (s *Store) SetShardState(ctx context.Context, st *State, name, state string) error {
	sh, ok := st.Shards[name]
	if !ok {
		return fmt.Errorf("shard %q: %w (see `reshard shard list`)", name, ErrNotFound)
	}
	if state != ShardActive && state != ShardDraining {
		return fmt.Errorf("%w: shard state %q: use active or draining", ErrInvalid, state)
	}
	if sh.State == state {
		return nil
	}
	from := sh.State
	sh.State = state
	var w write
	w.cmpRev(s, ShardKey(name), st.ModRev[ShardKey(name)])
	if err := w.put(s, ShardKey(name), sh); err != nil {
		return err
	}
	w.events = append(w.events, Event{Kind: EventShardState, Shard: name, From: from, To: state})
	rev, err := s.commit(ctx, &w)
	if err != nil {
		return fmt.Errorf("set shard %s %s: %w", name, state, err)
	}
	st.Shards[name] = sh
	st.ModRev[ShardKey(name)] = rev
	st.Revision = rev
	return nil
}

// Freeze marks the range starting at lo frozen for migration m (writes to it are being
// fenced for a cutover) and writes m with phase frozen, in one transaction that compares
// the range's and the migration's revisions. The range must be serving, equal m.Range and
// be owned by m.Source.
func (s *Store) Freeze(ctx context.Context, st *State, lo int64, m *Migration, opts ...WriteOption) error {
	i, r, err := st.migrationRange(lo, m, "freeze")
	if err != nil {
		return err
	}
	if r.State != RangeServing {
		return fmt.Errorf("freeze %s: it is already frozen by migration %q (wait for it, or `reshard cancel %s`): %w", r.Range, r.Migration, r.Migration, ErrConflict)
	}
	if r.Shard != m.Source {
		return fmt.Errorf("freeze %s: it is owned by %s, not by the migration's source %s: %w", r.Range, r.Shard, m.Source, ErrConflict)
	}
	nr := r
	nr.State, nr.Migration = RangeFrozen, m.ID
	nm := *m
	nm.Phase = PhaseFrozen
	return s.rangeAndMigration(ctx, st, i, nr, &nm, m, Event{Kind: EventRangeState, Range: &r.Range, Shard: r.Shard, From: RangeServing, To: RangeFrozen, Epoch: r.Epoch, Migration: m.ID}, opts)
}

// Unfreeze puts a range frozen by m back to serving (a rollback before the flip), and writes
// m as given (the caller sets its phase, e.g. rolled_back), in one transaction.
func (s *Store) Unfreeze(ctx context.Context, st *State, lo int64, m *Migration, opts ...WriteOption) error {
	i, r, err := st.migrationRange(lo, m, "unfreeze")
	if err != nil {
		return err
	}
	if r.State != RangeFrozen || r.Migration != m.ID {
		return fmt.Errorf("unfreeze %s: it is %s (migration %q), not frozen by %s: %w", r.Range, r.State, r.Migration, m.ID, ErrConflict)
	}
	nr := r
	nr.State, nr.Migration = RangeServing, ""
	nm := *m
	return s.rangeAndMigration(ctx, st, i, nr, &nm, m, Event{Kind: EventRangeState, Range: &r.Range, Shard: r.Shard, From: RangeFrozen, To: RangeServing, Epoch: r.Epoch, Migration: m.ID}, opts)
}

// Flip is the commit point of a cutover: ONE transaction compares the range's and the
// migration's revisions, then puts the range owned by newShard (serving, epoch+1), the
// migration in phase flipped, and a history event. The range must be frozen by m.
func (s *Store) Flip(ctx context.Context, st *State, lo int64, m *Migration, newShard string, opts ...WriteOption) error {
	i, r, err := st.migrationRange(lo, m, "flip")
	if err != nil {
		return err
	}
	if r.State != RangeFrozen || r.Migration != m.ID {
		return fmt.Errorf("flip %s: it is %s (migration %q); only a range frozen by %s can flip: %w", r.Range, r.State, r.Migration, m.ID, ErrConflict)
	}
	if _, ok := st.Shards[newShard]; !ok {
		return fmt.Errorf("flip %s: target shard %q: %w", r.Range, newShard, ErrNotFound)
	}
	if m.Target != "" && m.Target != newShard {
		return fmt.Errorf("%w: flip %s: migration %s targets %s, not %s", ErrInvalid, r.Range, m.ID, m.Target, newShard)
	}
	if newShard == r.Shard {
		return fmt.Errorf("%w: flip %s: it is already owned by %s", ErrInvalid, r.Range, newShard)
	}
	nr := Range{Range: r.Range, Shard: newShard, State: RangeServing, Epoch: r.Epoch + 1}
	nm := *m
	nm.Phase = PhaseFlipped
	ev := Event{Kind: EventFlip, Range: &r.Range, From: r.Shard, To: newShard, Shard: newShard, Epoch: nr.Epoch, Migration: m.ID}
	shardExists := func(w *write) {
		w.cmps = append(w.cmps, clientv3.Compare(clientv3.CreateRevision(s.key(ShardKey(newShard))), "!=", 0))
	}
	return s.rangeAndMigration(ctx, st, i, nr, &nm, m, ev, append(opts, shardExists))
}

// migrationRange finds the range starting at lo and checks that it is m's range; verb names
// the write in the error.
func (st *State) migrationRange(lo int64, m *Migration, verb string) (int, Range, error) {
	i, err := st.rangeIndex(lo)
	if err != nil {
		return 0, Range{}, err
	}
	r := st.Ranges[i]
	if err := checkMigrationRange(r, m); err != nil {
		return 0, Range{}, fmt.Errorf("%s %s: %w", verb, r.Range, err)
	}
	return i, r, nil
}

func checkMigrationRange(r Range, m *Migration) error {
	if m == nil || m.ID == "" {
		return fmt.Errorf("%w: no migration given", ErrInvalid)
	}
	if m.ModRev == 0 {
		return fmt.Errorf("%w: migration %s is not stored yet: PutMigration it first", ErrInvalid, m.ID)
	}
	if !m.Range.Equal(r.Range) {
		return fmt.Errorf("%w: migration %s is for range %s, but the range in the catalog is %s (split it first)", ErrInvalid, m.ID, m.Range, r.Range)
	}
	return nil
}

// rangeAndMigration writes range i and migration nm in one transaction comparing both
// revisions; on success it updates st (range i in place: st must be the caller's own, from
// Load or Clone, as for every write) and *m.
func (s *Store) rangeAndMigration(ctx context.Context, st *State, i int, nr Range, nm, m *Migration, ev Event, opts []WriteOption) error {
	from, stored, seq, err := s.storedPhaseAndSeq(ctx, m)
	if err != nil {
		return fmt.Errorf("%s %s: %w", ev.Kind, nr.Range, err)
	}
	if err := checkPhaseChange(from, nm.Phase); err != nil {
		return err
	}
	if err := validateInPlace(st.Ranges[i], nr, st.Shards); err != nil {
		return err
	}
	nm.Updated = s.now().UTC()
	rk := RangeKey(nr.Range.Lo)
	var w write
	w.cmpRev(s, rk, st.ModRev[rk])
	w.cmpRev(s, MigrationKey(m.ID), m.ModRev)
	w.with(opts)
	if err := w.put(s, rk, nr); err != nil {
		return err
	}
	w.events = append(w.events, ev)
	if nm.Phase != from {
		w.events = append(w.events, Event{Kind: EventPhase, Range: &nm.Range, Migration: nm.ID, From: from, To: nm.Phase})
	}
	dead, err := s.putMigration(ctx, &w, nm, stored)
	if err != nil {
		return err
	}
	rev, err := s.commitSeq(ctx, &w, seq)
	if err != nil {
		return fmt.Errorf("%s %s: %w", ev.Kind, nr.Range, err)
	}
	s.dropPages(ctx, dead)
	st.Ranges[i] = nr
	st.ModRev[rk] = rev
	st.ModRev[MigrationKey(nm.ID)] = rev
	st.Revision = rev
	nm.ModRev = rev
	*m = *nm
	if st.Migrations != nil {
		st.Migrations[m.ID] = *m
	}
	return nil
}

// storedPhase is the phase of m as stored at m.ModRev ("" for a new one). Reading it,
// rather than trusting the caller's copy, keeps the phase rules and the history's "from"
// right whoever built the struct; a record changed since m.ModRev is ErrConflict at once.
// It also returns the stored record (nil for a new one).
func (s *Store) storedPhase(ctx context.Context, m *Migration) (string, *Migration, error) {
	if m.ModRev == 0 {
		return "", nil, nil
	}
	resp, err := s.get(ctx, s.key(MigrationKey(m.ID)))
	if err != nil {
		return "", nil, s.wrapEtcd(err)
	}
	return s.phaseAt(m, resp.Kvs)
}

// storedPhaseAndSeq is storedPhase plus the history counter, in one read: Freeze and Flip
// run inside the cutover window, where each etcd round trip counts.
func (s *Store) storedPhaseAndSeq(ctx context.Context, m *Migration) (string, *Migration, *seqRead, error) {
	resp, err := s.read(ctx, clientv3.OpGet(s.key(MigrationKey(m.ID))), clientv3.OpGet(s.key(keySeq)))
	if err != nil {
		return "", nil, nil, s.wrapEtcd(err)
	}
	seq, rev, err := parseSeq(resp.Responses[1].GetResponseRange().Kvs)
	if err != nil {
		return "", nil, nil, err
	}
	if m.ModRev == 0 {
		return "", nil, &seqRead{seq, rev}, nil
	}
	phase, cur, err := s.phaseAt(m, resp.Responses[0].GetResponseRange().Kvs)
	return phase, cur, &seqRead{seq, rev}, err
}

// phaseAt decodes the stored record (its plan's pages unread) if it is still m's.
func (s *Store) phaseAt(m *Migration, kvs []*mvccKV) (string, *Migration, error) {
	if len(kvs) == 0 || kvs[0].ModRevision != m.ModRev {
		return "", nil, fmt.Errorf("migration %s was changed by another driver: %w", m.ID, ErrConflict)
	}
	var cur Migration
	if err := json.Unmarshal(kvs[0].Value, &cur); err != nil {
		return "", nil, badValue(string(kvs[0].Key), err)
	}
	return cur.Phase, &cur, nil
}

// Split replaces the range starting at lo by [lo, at) and [at, hi) on the same shard, both
// serving with epoch+1, in one transaction (the left half keeps the key; the right half's
// key must not exist). The range must be serving.
func (s *Store) Split(ctx context.Context, st *State, lo, at int64) error {
	i, err := st.rangeIndex(lo)
	if err != nil {
		return err
	}
	r := st.Ranges[i]
	if r.State != RangeServing {
		return fmt.Errorf("split %s: it is frozen by migration %q (wait for it, or `reshard cancel %s`): %w", r.Range, r.Migration, r.Migration, ErrConflict)
	}
	a, b, err := r.Range.Split(at)
	if err != nil {
		return fmt.Errorf("%w: split %s at %d: %v", ErrInvalid, r.Range, at, err)
	}
	left := Range{Range: a, Shard: r.Shard, State: RangeServing, Epoch: r.Epoch + 1}
	right := Range{Range: b, Shard: r.Shard, State: RangeServing, Epoch: r.Epoch + 1}
	rs := make([]Range, 0, len(st.Ranges)+1)
	rs = append(rs, st.Ranges[:i]...)
	rs = append(rs, left, right)
	rs = append(rs, st.Ranges[i+1:]...)
	if err := ValidateRanges(rs, st.Shards); err != nil {
		return err
	}
	lk, rk := RangeKey(a.Lo), RangeKey(b.Lo)
	var w write
	w.cmpRev(s, lk, st.ModRev[lk])
	w.cmpRev(s, rk, 0)
	if err := w.put(s, lk, left); err != nil {
		return err
	}
	if err := w.put(s, rk, right); err != nil {
		return err
	}
	w.events = append(w.events, Event{Kind: EventSplit, Range: &r.Range, Shard: r.Shard, Epoch: left.Epoch, Detail: fmt.Sprintf("split at %d into %s and %s", at, a, b)})
	rev, err := s.commit(ctx, &w)
	if err != nil {
		return fmt.Errorf("split %s at %d: %w", r.Range, at, err)
	}
	st.Ranges = rs
	st.ModRev[lk], st.ModRev[rk] = rev, rev
	st.Revision = rev
	return nil
}

// phaseOrder ranks the forward phases.
var phaseOrder = map[string]int{
	PhasePlanned: 0, PhasePreflight: 1, PhaseCopying: 2, PhaseCatchingUp: 3, PhaseFrozen: 4,
	PhaseVerifying: 5, PhaseFlipped: 6, PhaseCleaningUp: 7, PhaseDone: 8,
	PhaseRollingBack: 9, PhaseRolledBack: 10, PhaseCancelled: 10,
}

// checkPhaseChange enforces the journal's rules: a terminal migration is never written again; once
// flipped (the commit point) it never goes back before flipped nor rolls back; before
// that, phases may repeat or go back (a retried cutover) and may end rolled_back/cancelled.
// A rolling_back migration only ends (rolled_back or cancelled): the decision never to
// flip, once journaled, is final, so no driver can freeze or flip it again.
func checkPhaseChange(from, to string) error {
	if _, ok := phaseOrder[to]; !ok {
		return fmt.Errorf("%w: migration phase %q is unknown", ErrInvalid, to)
	}
	switch from {
	case PhaseDone, PhaseRolledBack, PhaseCancelled:
		return fmt.Errorf("%w: migration is %s and its journal is final: start a new migration", ErrInvalid, from)
	}
	if from == "" || from == to {
		return nil
	}
	if from == PhaseRollingBack {
		if to != PhaseRolledBack && to != PhaseCancelled {
			return fmt.Errorf("%w: migration is rolling back and cannot move to %s: re-run it (or `reshard cancel`) to finish the rollback", ErrInvalid, to)
		}
		return nil
	}
	if phaseOrder[from] >= phaseOrder[PhaseFlipped] && phaseOrder[to] < phaseOrder[from] {
		return fmt.Errorf("%w: migration passed its commit point (%s) and cannot move to %s: finish it with `reshard cleanup`", ErrInvalid, from, to)
	}
	if phaseOrder[from] >= phaseOrder[PhaseFlipped] && (to == PhaseRollingBack || to == PhaseRolledBack || to == PhaseCancelled) {
		return fmt.Errorf("%w: migration passed its commit point (%s) and cannot be %s: finish it with `reshard cleanup`", ErrInvalid, from, to)
	}
	return nil
}

// ValidateMigration checks a journal record before it is stored.
func ValidateMigration(m *Migration) error {
	var p Problems
	if !ValidName(m.ID) {
		p.add("migration id %q: use lower-case letters, digits and _ (at most 48), starting with a letter; it names slots and publications", m.ID)
	}
	switch m.Kind {
	case KindMove, KindSplit:
	default:
		p.add("migration %s: kind %q: use move or split", m.ID, m.Kind)
	}
	if _, ok := phaseOrder[m.Phase]; !ok {
		p.add("migration %s: phase %q is unknown", m.ID, m.Phase)
	}
	if m.Range.Empty() {
		p.add("migration %s: range %s is empty", m.ID, m.Range)
	}
	return p.Err()
}

// PutMigration creates (m.ModRev == 0: ErrExists if the id is taken) or updates (compare
// m.ModRev: ErrConflict if another driver wrote it since) a migration journal. A phase
// change is appended to the history in the same transaction. On success m.ModRev is the
// new revision. A driver passes HeldBy(its lock) so a write of a lock it lost fails.
func (s *Store) PutMigration(ctx context.Context, m *Migration, opts ...WriteOption) error {
	if err := ValidateMigration(m); err != nil {
		return err
	}
	from, stored, err := s.storedPhase(ctx, m)
	if err != nil {
		return fmt.Errorf("write migration %s: %w", m.ID, err)
	}
	if err := checkPhaseChange(from, m.Phase); err != nil {
		return fmt.Errorf("migration %s: %w", m.ID, err)
	}
	nm := *m
	now := s.now().UTC()
	if nm.Created.IsZero() {
		nm.Created = now
	}
	nm.Updated = now
	var w write
	w.cmpRev(s, MigrationKey(m.ID), m.ModRev)
	w.with(opts)
	if m.ModRev == 0 {
		w.cmps = append(w.cmps, clientv3.Compare(clientv3.CreateRevision(s.key(keyConfig)), "!=", 0))
	}
	if from != nm.Phase {
		w.events = append(w.events, Event{Kind: EventPhase, Range: &nm.Range, Migration: nm.ID, From: from, To: nm.Phase, Shard: nm.Source})
	}
	dead, err := s.putMigration(ctx, &w, &nm, stored)
	if err != nil {
		return fmt.Errorf("write migration %s: %w", m.ID, err)
	}
	rev, err := s.commit(ctx, &w)
	if err != nil {
		if errors.Is(err, ErrConflict) && m.ModRev == 0 {
			if _, gerr := s.GetMigration(ctx, m.ID); gerr == nil {
				return fmt.Errorf("create migration %s: %w (pick another id, or resume it)", m.ID, ErrExists)
			}
			if _, lerr := s.Load(ctx); errors.Is(lerr, ErrNotFound) {
				return fmt.Errorf("create migration %s: %w", m.ID, lerr)
			}
		}
		return fmt.Errorf("write migration %s: %w", m.ID, err)
	}
	s.dropPages(ctx, dead)
	nm.ModRev = rev
	*m = nm
	return nil
}

// GetMigration reads one journal; ErrNotFound if there is none.
func (s *Store) GetMigration(ctx context.Context, id string) (*Migration, error) {
	// The record and its plan's pages at one revision (copyplan.go).
	resp, err := s.read(ctx, clientv3.OpGet(s.key(MigrationKey(id))), clientv3.OpGet(s.key(copyPagesPrefix(id)), clientv3.WithPrefix()))
	if err != nil {
		return nil, fmt.Errorf("read migration %s: %w", id, s.wrapEtcd(err))
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, fmt.Errorf("migration %q: %w (see `reshard status`)", id, ErrNotFound)
	}
	m, err := decodeMigration(kvs[0].Value, kvs[0].ModRevision)
	if err != nil {
		return nil, badValue(string(kvs[0].Key), err)
	}
	if err := fillPlan(m, resp.Responses[1].GetResponseRange().Kvs); err != nil {
		return nil, err
	}
	return m, nil
}

// ListMigrations reads every journal, oldest first.
func (s *Store) ListMigrations(ctx context.Context) ([]Migration, error) {
	resp, err := s.get(ctx, s.key(pfxMigrations), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", s.wrapEtcd(err))
	}
	out := make([]Migration, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m, err := decodeMigration(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, badValue(string(kv.Key), err)
		}
		out = append(out, *m)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// History returns the last limit events (all if limit <= 0), oldest first.
func (s *Store) History(ctx context.Context, limit int) ([]Event, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := s.get(ctx, s.key(pfxHistory), opts...)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", s.wrapEtcd(err))
	}
	out := make([]Event, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &out[len(out)-1-i]); err != nil {
			return nil, badValue(string(kv.Key), err)
		}
	}
	return out, nil
}

// NewState builds and validates a catalog from its parts without writing anything (what
// Init would write): defaults filled (shards active, ranges serving at epoch 1, nil ranges
// split evenly). The error lists every problem (see ProblemList).
func NewState(cfg Config, shards []Shard, ranges []Range) (*State, error) {
	return newState(cfg, shards, append([]Range(nil), ranges...), time.Now().UTC())
}

// ProblemList splits a validation error into its problems, one per line.
func ProblemList(err error) []string {
	if err == nil {
		return nil
	}
	return problemsOf(err)
}

// validateInPlace checks nr, which replaces old: freeze, unfreeze and flip keep a range's
// bounds, so the key line stays tiled and only the new owner and state need checking. A
// check of every range (ValidateRanges) here would cost the cutover window a copy and a
// sort of the whole catalog: hundreds of milliseconds at a million ranges.
func validateInPlace(old, nr Range, shards map[string]Shard) error {
	var p Problems
	if !nr.Range.Equal(old.Range) {
		p.add("range %s cannot become %s in place: split or merge it instead", old.Range, nr.Range)
	}
	if _, ok := shards[nr.Shard]; !ok && shards != nil {
		p.add("range %s: unknown shard %q (add it with `reshard shard add` or fix the range)", nr.Range, nr.Shard)
	}
	if nr.State != RangeServing && nr.State != RangeFrozen {
		p.add("range %s: state %q: use serving or frozen", nr.Range, nr.State)
	}
	return p.Err()
}
