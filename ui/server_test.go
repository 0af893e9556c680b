package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// testCatalog is an embedded etcd with a catalog of three shards split evenly.
func testCatalog(t *testing.T) (*catalog.Store, *catalog.State) {
	t.Helper()
	_, cli := testenv.Etcd(t)
	store, err := catalog.NewStore(cli, "uitest")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var shards []catalog.Shard
	for _, n := range []string{"s1", "s2", "s3"} {
		shards = append(shards, catalog.Shard{Name: n, DSN: "host=127.0.0.1 dbname=" + n})
	}
	if err := store.Init(ctx, catalog.Config{Cluster: "uitest", Key: "tenant_id", Tables: []string{"orders"}}, shards, nil, false); err != nil {
		t.Fatal(err)
	}
	st, err := store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return store, st
}

// sse reads the models an /api/events stream sends.
func sse(t *testing.T, ctx context.Context, url string) <-chan Model {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("/api/events is %q, want text/event-stream", ct)
	}
	out := make(chan Model)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m Model
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Errorf("an event that is not a model: %v", err)
				return
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// until reads models from ch until one satisfies ok.
func until(t *testing.T, ctx context.Context, ch <-chan Model, what string, ok func(Model) bool) Model {
	t.Helper()
	for {
		select {
		case m, open := <-ch:
			if !open {
				t.Fatalf("waiting for %s: the event stream ended", what)
			}
			if ok(m) {
				return m
			}
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		}
	}
}

// newServer is the page's server over a feed of store's catalog; the caller closes the feed.
func newServer(t *testing.T, ctx context.Context, store *catalog.Store) (*Feed, *Server) {
	t.Helper()
	feed, err := StartFeed(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(feed)
	if err != nil {
		feed.Close()
		t.Fatal(err)
	}
	return feed, srv
}

// The event stream pushes a new model for each change the watches see: a migration's
// journal, its phase changes in the history, new stats, a driver's lock, and /api/state
// serves the same model.
func TestEventsFollowTheCatalog(t *testing.T) {
	store, st := testCatalog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	feed, srv := newServer(t, ctx, store)
	defer feed.Close()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	// The stream ends before the server closes (Close waits for open requests).
	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	events := sse(t, sctx, hs.URL+"/api/events")
	first := until(t, ctx, events, "the first model", func(Model) bool { return true })
	if len(first.Shards) != 3 || len(first.Strip) != 3 || len(first.Migrations) != 0 || first.StatsAt != nil {
		t.Fatalf("first model: %d shards, %d segments, %d migrations, stats %v", len(first.Shards), len(first.Strip), len(first.Migrations), first.StatsAt)
	}

	m := &catalog.Migration{ID: "m1", Kind: catalog.KindMove, Range: st.Ranges[0].Range, Source: "s1", Target: "s2", Phase: catalog.PhasePlanned}
	if err := store.PutMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, events, "the new migration, without a driver", func(m Model) bool {
		return len(m.Migrations) == 1 && m.Migrations[0].ID == "m1" && m.Migrations[0].Abandoned
	})
	lock, err := store.LockMigration(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	until(t, ctx, events, "the driver's lock", func(m Model) bool {
		return len(m.Migrations) == 1 && m.Migrations[0].Driver != nil && m.Migrations[0].Driver.Held
	})
	m.Phase = catalog.PhasePreflight
	if err := store.PutMigration(ctx, m, catalog.HeldBy(lock)); err != nil {
		t.Fatal(err)
	}
	m.Phase, m.RowsCopied = catalog.PhaseCopying, 10
	if err := store.PutMigration(ctx, m, catalog.HeldBy(lock)); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, events, "the copying phase and its history", func(v Model) bool {
		return len(v.Migrations) == 1 && v.Migrations[0].Phase == catalog.PhaseCopying && len(v.History) > 0 &&
			v.History[0].Kind == catalog.EventPhase && v.History[0].To == catalog.PhaseCopying
	})
	if err := store.PutStats(ctx, &catalog.Stats{Shards: map[string]catalog.ShardStats{
		"s1": {Shard: "s1", Bytes: 300, Rows: 30, CollectedAt: time.Now()},
		"s2": {Shard: "s2", Bytes: 100, Rows: 10, CollectedAt: time.Now()}}}); err != nil {
		t.Fatal(err)
	}
	last := until(t, ctx, events, "the stats", func(v Model) bool { return v.StatsAt != nil })
	if b := last.Shards[0].Load.Bytes; b.Value != 300 || b.Frac != 1 || !near(last.Mean.Bytes.Value, 400.0/3) {
		t.Errorf("s1 bytes %+v, mean %+v", b, last.Mean.Bytes)
	}
	if err := lock.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	last = until(t, ctx, events, "the lock released", func(v Model) bool { return len(v.Migrations) == 1 && v.Migrations[0].Abandoned })

	resp, err := http.Get(hs.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Model
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Revision < last.Revision || len(got.Migrations) != 1 || got.Migrations[0].Phase != catalog.PhaseCopying {
		t.Errorf("/api/state: revision %d (events had %d), migrations %+v", got.Revision, last.Revision, got.Migrations)
	}
}

// The page and its assets come from the binary: the template carries the model, and no
// asset refers to anything outside the server.
func TestPageIsSelfContained(t *testing.T) {
	store, _ := testCatalog(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	feed, srv := newServer(t, ctx, store)
	defer feed.Close()
	for _, path := range []string{"/", "/assets/page.js", "/assets/page.css"} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body := rec.Body.String()
		if rec.Code != http.StatusOK {
			t.Errorf("%s: status %d", path, rec.Code)
		}
		if strings.Contains(body, "http://") || strings.Contains(body, "https://") || strings.Contains(body, "//cdn") {
			t.Errorf("%s refers to something outside the server", path)
		}
		if path == "/" && !strings.Contains(body, `"cluster":"uitest"`) {
			t.Errorf("the page does not carry the model:\n%s", body)
		}
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/state", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/state: status %d, want 405 (the page only reads)", rec.Code)
	}
}
