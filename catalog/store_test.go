package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestInitLoad(t *testing.T) {
	s, cli := testStore(t)
	ctx := context.Background()
	if _, err := s.Load(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load before init = %v, want ErrNotFound", err)
	}
	st := initDemo(t, s)
	if len(st.Ranges) != 3 || len(st.Shards) != 3 || st.Config.Key != "tenant_id" {
		t.Fatalf("loaded %+v", st)
	}
	for _, r := range st.Ranges {
		if r.State != RangeServing || r.Epoch != 1 {
			t.Errorf("range %s: state %s epoch %d", r.Range, r.State, r.Epoch)
		}
		if st.ModRev[RangeKey(r.Range.Lo)] == 0 {
			t.Errorf("no mod revision for %s", r.Range)
		}
	}
	// The documented keys hold JSON readable with etcdctl.
	resp, err := cli.Get(ctx, "/reshard/demo/ranges/"+KeyHex(0))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("range key: %v %v", resp, err)
	}
	var r map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil || r["shard"] != "s2" {
		t.Errorf("range value %s: %v", resp.Kvs[0].Value, err)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("s1"), nil, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second init = %v, want ErrExists", err)
	}
	if err := s.Init(ctx, demoConfig(), demoShards("a", "b"), nil, true); err != nil {
		t.Fatalf("init --force: %v", err)
	}
	st, err = s.Load(ctx)
	if err != nil || len(st.Shards) != 2 || len(st.Ranges) != 2 || st.Ranges[0].Shard != "a" {
		t.Fatalf("after force: %+v %v", st, err)
	}
	if _, ok := st.Shards["s1"]; ok {
		t.Error("force init kept an old shard")
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 2 || h[0].Seq != 1 || h[1].Seq != 2 || !strings.Contains(h[1].Detail, "--force") {
		t.Errorf("history after force init: %+v %v", h, err)
	}
}

// Unrelated writers appending history concurrently all succeed (the counter retries
// internally) and seqs stay dense and unique.
func TestHistoryConcurrentAppends(t *testing.T) {
	s, _ := testStore(t)
	ctx := context.Background()
	initDemo(t, s)
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.AddShard(ctx, Shard{Name: fmt.Sprintf("x%d", i), DSN: "host=h"})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 13 {
		t.Fatalf("history: %d events, %v", len(h), err)
	}
	for i, ev := range h {
		if ev.Seq != int64(i+1) {
			t.Errorf("event %d has seq %d", i, ev.Seq)
		}
	}
	if err := s.AddShard(ctx, Shard{Name: "x1", DSN: "host=h"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate shard = %v, want ErrExists", err)
	}
}
