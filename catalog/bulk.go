package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ExportFormat names the layout of an export file.
const ExportFormat = "reshard-catalog/1"

// Export is a backup of a cluster's catalog: every key under /reshard/<cluster>/ except the
// locks, read at one revision, with its JSON value as stored.
type Export struct {
	Format   string                     `json:"format"`
	Cluster  string                     `json:"cluster"`
	Revision int64                      `json:"revision"`
	Exported time.Time                  `json:"exported"`
	Keys     map[string]json.RawMessage `json:"keys"` // relative to /reshard/<cluster>/
}

// Export returns the whole catalog of the cluster (config, shards, ranges, stats,
// migrations, history, the history counter) as indented JSON, read at one revision.
func (s *Store) Export(ctx context.Context) ([]byte, error) {
	ex := Export{Format: ExportFormat, Cluster: s.cluster, Exported: s.now().UTC(), Keys: map[string]json.RawMessage{}}
	rev, err := s.scan(ctx, s.prefix, clientv3.GetPrefixRangeEnd(s.prefix), 0, func(kv *mvccKV) error {
		rel := s.rel(kv.Key)
		if strings.HasPrefix(rel, pfxLocks) {
			return nil
		}
		if !json.Valid(kv.Value) {
			return badValue(string(kv.Key), fmt.Errorf("not JSON"))
		}
		ex.Keys[rel] = json.RawMessage(kv.Value)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	ex.Revision = rev
	if _, ok := ex.Keys[keyConfig]; !ok {
		return nil, fmt.Errorf("export: %w", s.notFoundCatalog())
	}
	return json.MarshalIndent(ex, "", "  ")
}

// Import restores an export into this cluster. It validates the whole file first (a bad
// file changes nothing). Without force it fails with ErrExists when anything of the
// cluster is in etcd; with force it replaces everything but the locks. An import event is
// appended to the imported history.
func (s *Store) Import(ctx context.Context, data []byte, force bool) error {
	var ex Export
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ex); err != nil {
		return fmt.Errorf("%w: import: the file is not a reshard catalog export (%v): make it with `reshard catalog export`", ErrInvalid, err)
	}
	if ex.Format != ExportFormat {
		return fmt.Errorf("%w: import: format %q, want %q (a file from `reshard catalog export`)", ErrInvalid, ex.Format, ExportFormat)
	}
	if ex.Cluster != s.cluster {
		return fmt.Errorf("%w: import: the file is a backup of cluster %q: import it with --cluster %s", ErrInvalid, ex.Cluster, ex.Cluster)
	}
	st, desired, maxSeq, err := decodeExport(ex)
	if err != nil {
		return err
	}
	if err := ValidateState(st); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if st.Config.Cluster != s.cluster {
		return fmt.Errorf("%w: import: config names cluster %q, the file says %q", ErrInvalid, st.Config.Cluster, s.cluster)
	}
	// The import event takes the next seq after the imported history; the counter in the
	// file is ignored in favour of the real maximum so the two cannot disagree.
	delete(desired, keySeq)
	ev := Event{Seq: maxSeq + 1, Time: s.now().UTC(), Kind: EventImport, Detail: fmt.Sprintf("restored an export of revision %d", ex.Revision)}
	b, _ := json.Marshal(ev)
	desired[historyKey(ev.Seq)] = json.RawMessage(b)
	desired[keySeq] = json.RawMessage(strconv.FormatInt(ev.Seq, 10))
	if err := s.replace(ctx, desired, nil, force, nil); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	return nil
}

// decodeExport checks every key of an export and decodes the catalog part.
func decodeExport(ex Export) (*State, map[string]any, int64, error) {
	var p Problems
	st := &State{Shards: map[string]Shard{}, ModRev: map[string]int64{}}
	desired := map[string]any{}
	var maxSeq int64
	var haveConfig bool
	migs := map[string]*Migration{}
	strict := func(raw json.RawMessage, v any) error {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		return d.Decode(v)
	}
	for rel, raw := range ex.Keys {
		desired[rel] = raw
		var err error
		switch {
		case rel == keyConfig:
			haveConfig = true
			err = strict(raw, &st.Config)
		case rel == keySeq:
			_, err = strconv.ParseInt(string(raw), 10, 64)
		case strings.HasPrefix(rel, pfxShards):
			var sh Shard
			if err = strict(raw, &sh); err == nil && ShardKey(sh.Name) != rel {
				err = fmt.Errorf("key does not match shard name %q", sh.Name)
			}
			st.Shards[sh.Name] = sh
		case strings.HasPrefix(rel, pfxRanges):
			var r Range
			if err = strict(raw, &r); err == nil && RangeKey(r.Range.Lo) != rel {
				err = fmt.Errorf("key does not match the range's lower bound %s", r.Range)
			}
			st.Ranges = append(st.Ranges, r)
		case strings.HasPrefix(rel, pfxMigrations):
			var m Migration
			if err = strict(raw, &m); err == nil && MigrationKey(m.ID) != rel {
				err = fmt.Errorf("key does not match migration id %q", m.ID)
			}
			migs[m.ID] = &m
		case strings.HasPrefix(rel, pfxCopyPlans):
			var chunks []CopyChunk
			err = strict(raw, &chunks)
		case strings.HasPrefix(rel, pfxHistory):
			var ev Event
			if err = strict(raw, &ev); err == nil && historyKey(ev.Seq) != rel {
				err = fmt.Errorf("key does not match seq %d", ev.Seq)
			}
			maxSeq = max(maxSeq, ev.Seq)
		case strings.HasPrefix(rel, pfxShardStats):
			err = strict(raw, &ShardStats{})
		case strings.HasPrefix(rel, pfxRangeStats):
			err = strict(raw, &RangeStats{})
		case strings.HasPrefix(rel, pfxHotKeys):
			err = strict(raw, &HotKey{})
		case rel == keyPartitionRun:
			var run PartitionRun
			if err = strict(raw, &run); err == nil {
				err = ValidatePartitionRun(&run)
			}
		default:
			err = fmt.Errorf("not a catalog key")
		}
		if err != nil {
			p.add("key %s: %v", rel, err)
		}
	}
	if !haveConfig {
		p.add("no config key: the file holds no catalog")
	}
	sort.Strings(p)
	if err := p.Err(); err != nil {
		return nil, nil, 0, fmt.Errorf("import: %w", err)
	}
	sort.Slice(st.Ranges, func(i, j int) bool { return st.Ranges[i].Range.Lo < st.Ranges[j].Range.Lo })
	keepReadPages(desired, migs)
	return st, desired, maxSeq, nil
}

// keepReadPages leaves in desired only the copy plan pages a restored record reads: those
// the record of an unended migration references. An ended migration's record is restored
// with its plan spent, as the store writes it now (an export of a catalog from before held
// its pages); pages no record references (sent by a write that lost its compare-and-swap,
// or of a migration that is gone) are left out.
func keepReadPages(desired map[string]any, migs map[string]*Migration) {
	read := map[string]bool{} // page keys
	for id, m := range migs {
		for h := range pageRefs(m) {
			read[copyPageKey(id, h)] = !copySpent(m.Phase)
		}
	}
	for rel := range desired {
		if strings.HasPrefix(rel, pfxCopyPlans) && !read[rel] {
			delete(desired, rel)
		}
	}
	for id, m := range migs {
		if copySpent(m.Phase) && !reflect.DeepEqual(m.Copy, m.Copy.spent()) {
			sm := *m
			sm.Copy = m.Copy.spent()
			desired[MigrationKey(id)] = &sm
		}
	}
}

// replace makes the cluster's keys (locks excluded, and keys for which keep is true) equal
// desired. Without force it fails with ErrExists when any such key exists. Values are
// marshalled to JSON (json.RawMessage as is).
//
// When everything fits in one transaction (max txn ops) the replacement is atomic, and it
// compares that nothing under the prefix (locks aside) changed since it was listed. A
// larger one is written in batches with the config last, under the same compare on the
// config; a reader that sees no config sees no catalog. Such a big replacement is not atomic
// for readers of stats and history, which is documented in docs/catalog.md.
func (s *Store) replace(ctx context.Context, desired map[string]any, keep func(string) bool, force bool, events []Event) error {
	lower, upper := s.key(pfxLocks), clientv3.GetPrefixRangeEnd(s.prefix)
	// Everything but the locks: [prefix, prefix+"locks/") and [prefix+"locks0", end).
	ranges := [][2]string{{s.prefix, lower}, {s.key("locks0"), upper}}
	var existing []string
	var rev int64
	for _, r := range ranges {
		var err error
		rev, err = s.scan(ctx, r[0], r[1], rev, func(kv *mvccKV) error {
			existing = append(existing, s.rel(kv.Key))
			return nil
		}, clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
	}
	if !force {
		for _, rel := range existing {
			if keep == nil || !keep(rel) {
				return fmt.Errorf("cluster %q already has a catalog in etcd (key %s%s): %w; pass --force to replace it (export it first)", s.cluster, s.prefix, rel, ErrExists)
			}
		}
	}
	var w write
	for _, r := range ranges {
		w.cmps = append(w.cmps, clientv3.Compare(clientv3.ModRevision(r[0]), "<", rev+1).WithRange(r[1]))
	}
	for _, rel := range existing {
		if _, ok := desired[rel]; ok || (keep != nil && keep(rel)) {
			continue
		}
		w.ops = append(w.ops, clientv3.OpDelete(s.key(rel)))
	}
	rels := make([]string, 0, len(desired))
	for rel := range desired {
		if rel != keyConfig {
			rels = append(rels, rel)
		}
	}
	sort.Strings(rels)
	if _, ok := desired[keyConfig]; ok {
		rels = append(rels, keyConfig) // last, so a batched replace publishes the catalog last
	}
	for _, rel := range rels {
		v := desired[rel]
		if raw, ok := v.(json.RawMessage); ok {
			w.ops = append(w.ops, clientv3.OpPut(s.key(rel), string(raw)))
			continue
		}
		if err := w.put(s, rel, v); err != nil {
			return err
		}
	}
	w.events = events
	need := len(w.ops) + len(w.events) + 1
	if need <= s.maxTxnOps && opBytes(w.ops)+eventBytes(events) <= s.maxTxnBytes {
		_, err := s.commit(ctx, &w)
		if err == ErrConflict {
			return fmt.Errorf("the catalog of %q changed while it was being replaced: %w", s.cluster, err)
		}
		return err
	}
	return s.replaceBatched(ctx, &w, rev)
}

// replaceBatched writes a too-big replacement in batches, each under the store's limits of
// operations and bytes per transaction (etcd refuses a request over --max-request-bytes
// whatever its count). Each batch compares that the config was not touched by anyone else
// since the listing (rev); the config goes last.
func (s *Store) replaceBatched(ctx context.Context, w *write, rev int64) error {
	cfgKey := s.key(keyConfig)
	batch := s.maxTxnOps - 1 - len(w.events)
	budget := s.maxTxnBytes - eventBytes(w.events)
	ops := w.ops // the config is the last op, so only the last batch publishes it
	for len(ops) > 0 {
		n, err := s.fit(ops, batch, budget)
		if err != nil {
			return err
		}
		chunk := ops[:n]
		ops = ops[n:]
		last := len(ops) == 0
		cmp := clientv3.Compare(clientv3.ModRevision(cfgKey), "<", rev+1)
		bw := write{cmps: []clientv3.Cmp{cmp}, ops: chunk}
		if last {
			bw.events = w.events
		}
		if _, err := s.commit(ctx, &bw); err != nil {
			if err == ErrConflict {
				return fmt.Errorf("another writer changed the config of %q during a batched replace; the catalog may be half-written: re-run with --force: %w", s.cluster, err)
			}
			return err
		}
	}
	return nil
}
