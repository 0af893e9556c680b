package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestBatchedWritesStayUnderTheRequestLimit: writes that etcd's 128-operation limit makes
// batched (import, stats) also keep each transaction under its 1.5 MiB request limit, so a
// catalog of big values is written whole instead of refused part way. Each case writes
// about 3 MiB in values of 16-30 KiB: 127 or 64 of them in one transaction, as batching by
// count alone does, are well over the limit.
func TestBatchedWritesStayUnderTheRequestLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, s *Store) // writes the big values
		check func(t *testing.T, s *Store) // they are all there
	}{
		{"import of a long history", importLongHistory, checkLongHistory},
		{"stats with big hot keys", putBigHotKeys, checkBigHotKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testStore(t)
			st := initDemo(t, s)
			tc.write(t, s)
			tc.check(t, s)
			// The catalog itself is as it was: every range on its shard.
			after, err := s.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if a, b := mustJSON(t, after.Ranges), mustJSON(t, st.Ranges); a != b {
				t.Fatalf("ranges changed:\n%s\n%s", a, b)
			}
			if len(after.Shards) != 3 {
				t.Fatalf("shards: %v", after.Shards)
			}
		})
	}
}

const bigHistory, bigDetail = 200, 16 << 10

// importLongHistory exports the catalog, adds 200 history events of 16 KiB each and
// imports it back over itself.
func importLongHistory(t *testing.T, s *Store) {
	ctx := context.Background()
	ex := exportOf(t, s)
	first := int64(len(ex.Keys)) + 100
	for i := range int64(bigHistory) {
		ev := Event{Seq: first + i, Kind: EventConfig, Detail: strings.Repeat(fmt.Sprint(i%10), bigDetail)}
		b, _ := json.Marshal(ev)
		ex.Keys[historyKey(ev.Seq)] = b
	}
	data, err := json.Marshal(ex)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Import(ctx, data, true); err != nil {
		t.Fatalf("import of %d KiB: %v", len(data)>>10, err)
	}
}

func checkLongHistory(t *testing.T, s *Store) {
	hist, err := s.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range hist {
		if len(ev.Detail) == bigDetail && ev.Detail == strings.Repeat(ev.Detail[:1], bigDetail) {
			n++
		}
	}
	if n != bigHistory || hist[len(hist)-1].Kind != EventImport {
		t.Fatalf("%d big events of %d, last %+v", n, bigHistory, hist[len(hist)-1].Kind)
	}
}

// putBigHotKeys writes 130 hot keys with 1500 application metrics each (about 30 KiB).
func putBigHotKeys(t *testing.T, s *Store) {
	var hot []HotKey
	for k := range int64(130) {
		custom := map[string]float64{}
		for m := range 1500 {
			custom[fmt.Sprintf("metric_%04d", m)] = float64(k)
		}
		hot = append(hot, HotKey{Key: k, Shard: "s2", Bytes: k, Custom: custom})
	}
	if err := s.PutStats(context.Background(), &Stats{HotKeys: hot}); err != nil {
		t.Fatal(err)
	}
}

func checkBigHotKeys(t *testing.T, s *Store) {
	got, err := s.LoadStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.HotKeys) != 130 {
		t.Fatalf("%d hot keys, want 130", len(got.HotKeys))
	}
	for _, hk := range got.HotKeys {
		if len(hk.Custom) != 1500 || hk.Custom["metric_1499"] != float64(hk.Key) {
			t.Fatalf("hot key %d: %d metrics", hk.Key, len(hk.Custom))
		}
	}
}

// TestFitCutsBatchesByCountAndBytes: the pure rule behind those batches.
func TestFitCutsBatchesByCountAndBytes(t *testing.T) {
	s := &Store{maxTxnBytes: defaultMaxTxnBytes}
	put := func(n int) clientv3.Op { return clientv3.OpPut("k", strings.Repeat("v", n-1)) }
	ops := func(sizes ...int) []clientv3.Op {
		var out []clientv3.Op
		for _, n := range sizes {
			out = append(out, put(n))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		ops     []clientv3.Op
		maxOps  int
		budget  int
		want    int
		wantErr string
	}{
		{"all fit", ops(10, 10, 10), 5, 100, 3, ""},
		{"count cuts", ops(10, 10, 10), 2, 100, 2, ""},
		{"bytes cut", ops(40, 40, 40), 5, 100, 2, ""},
		{"exactly the budget", ops(50, 50, 1), 5, 100, 2, ""},
		{"one big op goes alone", ops(90, 20), 5, 100, 1, ""},
		{"an op over the budget is refused", ops(101), 5, 100, 0, "more than one etcd transaction may carry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := s.fit(tc.ops, tc.maxOps, tc.budget)
			if n != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("fit = %d, %v; want %d, %q", n, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestWritesOverEtcdLimitsFailDefinitely: a write etcd refuses for its size (over
// --max-request-bytes) or its operations (over --max-txn-ops) is reported as the limit it
// hit, never as "outcome unknown": etcd refused it whole, nothing of it applied, and the
// caller must not read the catalog to find out.
func TestWritesOverEtcdLimitsFailDefinitely(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		write func(s *Store) error
		want  error
	}{
		{"a migration record over the request limit", func(s *Store) error {
			m := &Migration{ID: "big", Kind: KindMove, Range: NewRange(0, 10), Source: "s2", Target: "s3",
				Phase: PhasePlanned, LastError: strings.Repeat("x", 1600<<10)}
			return s.PutMigration(ctx, m)
		}, ErrRequestTooLarge},
		{"more operations than etcd takes in one transaction", func(s *Store) error {
			var w write
			for i := range 150 {
				w.ops = append(w.ops, clientv3.OpPut(s.key(fmt.Sprintf("many/%03d", i)), "v"))
			}
			_, err := s.commit(ctx, &w)
			return err
		}, ErrTooManyOps},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// reshard's own bound above etcd's (128): the request reaches etcd.
			s, cli := testStore(t, WithMaxTxnOps(200), WithRetry(5*time.Second))
			initDemo(t, s)
			before, err := cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			err = tc.write(s)
			if !errors.Is(err, tc.want) || strings.Contains(err.Error(), "did not say") {
				t.Fatalf("err = %v; want %v, and not an unknown outcome", err, tc.want)
			}
			after, err := cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if after.Count != before.Count || after.Header.Revision != before.Header.Revision {
				t.Fatalf("keys %d -> %d, revision %d -> %d: something applied", before.Count, after.Count, before.Header.Revision, after.Header.Revision)
			}
		})
	}
}
