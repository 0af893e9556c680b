package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/demo"
	"github.com/reshard/reshard/internal/testenv"
	"github.com/reshard/reshard/planner"
	"github.com/reshard/reshard/ui"
)

// uiWait bounds every wait for the page: generous, since a loaded 2-core machine runs the
// shards, etcd, the move and the browser at once. Nothing is timed, only bounded.
const uiWait = 4 * time.Minute

// uiStack is two shards with the demo schema and data (s1 owns :0, s2 owns 0:), their
// catalog in an embedded etcd, and every tenant's fingerprint taken before anything moved.
type uiStack struct {
	*cliCatalog
	conns  map[string]demo.Querier
	before demo.Snapshot
}

func newUIStack(t *testing.T, cluster string) *uiStack {
	t.Helper()
	pgs := testenv.Postgres(t, 2)
	ctx := testContext(t, 3*time.Minute)
	s := &uiStack{conns: map[string]demo.Querier{}}
	names := []string{"s1", "s2"}
	ranges := catalog.EvenRanges(names)
	opts := demo.DataOptions{Tenants: 40, Scale: 0.3, Seed: 15, HotRange: ranges[0].Range, Now: time.Now()}
	tenants, err := demo.GenerateTenants(opts)
	if err != nil {
		t.Fatal(err)
	}
	placed, err := demo.Place(tenants, ranges)
	if err != nil {
		t.Fatal(err)
	}
	var shards []catalog.Shard
	for i, pg := range pgs {
		c, err := pgx.Connect(ctx, pg.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		if err := demo.CreateSchema(ctx, c, opts.Now); err != nil {
			t.Fatal(err)
		}
		if _, err := demo.LoadShard(ctx, c, placed[names[i]], opts); err != nil {
			t.Fatal(err)
		}
		s.conns[names[i]] = c
		shards = append(shards, catalog.Shard{Name: names[i], DSN: pg.DSNApp()})
	}
	s.cliCatalog = newCatalog(t, ctx, catalog.Config{Cluster: cluster, Key: demo.Key, Tables: demo.Tables}, shards, ranges)
	if s.before, err = demo.TakeSnapshot(ctx, s.conns, demo.Tables); err != nil {
		t.Fatal(err)
	}
	return s
}

// serveUI serves the page of store on a free local port until the test ends.
func serveUI(t *testing.T, store *catalog.Store) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	feed, srv, err := startPage(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("page server: %v", err)
		}
		feed.Close()
	})
	return "http://" + ln.Addr().String() + "/"
}

// headlessChromium starts Debian's chromium for the test, with the flags that keep it
// from reaching out to the network (which would hang it on a closed one). A missing
// chromium fails the test: .ci/setup installs it.
func headlessChromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (run .ci/setup, or apt-get install -y chromium): %v", err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1600))
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// pagePoll waits until the JavaScript expression is truthy on the page.
func pagePoll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond),
		chromedp.WithPollingTimeout(uiWait))); err != nil {
		t.Fatalf("the page never showed %s: %v", what, err)
	}
}

func pageEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// recordPhases makes the page note, as the DOM changes, every phase each move on it shows,
// and marks the loaded page so a reload would show (the mark would be gone).
const recordPhases = `(() => {
  window.__loadedBeforeMove = true;
  window.__phases = {};
  const rec = () => document.querySelectorAll('#migrations [data-migration][data-kind=move]').forEach((e) => {
    const seen = (window.__phases[e.dataset.migration] ||= []);
    if (seen[seen.length - 1] !== e.dataset.phase) seen.push(e.dataset.phase);
  });
  new MutationObserver(rec).observe(document.getElementById('migrations'), { childList: true, subtree: true, attributes: true });
  rec();
  return true;
})()`

// The page shows a real stack's shards and ranges; a move started after the page loaded
// appears on it without a reload, its phase changes show, and the flip shows on the key
// line; a plan.json opened on the page shows each shard's load before and after. Every
// tenant's rows on both shards are checked after the move.
func TestUIPageFollowsAMoveInABrowser(t *testing.T) {
	testenv.Integration(t)
	const cluster = "uibrowser"
	s := newUIStack(t, cluster)
	ctx := testContext(t, 10*time.Minute)
	if res := runCLI(t, ctx, append(s.global, "stats", "collect", "--sample-writes", "0")...); res.code != 0 {
		t.Fatalf("stats collect: exit %d: %s", res.code, res.stderr)
	}
	url := serveUI(t, s.store)
	page := headlessChromium(t)
	if err := chromedp.Do(page, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	pagePoll(t, page, "the two shards and their ranges",
		`document.querySelectorAll('#shards tbody tr[data-shard]').length === 2 && document.querySelectorAll('#strip .seg').length === 2`)
	segs := pageEval[[]string](t, page, `[...document.querySelectorAll('#strip .seg')].map((e) => e.dataset.range + ' ' + e.dataset.shard)`)
	if strings.Join(segs, ", ") != ":0 s1, 0: s2" {
		t.Errorf("key line shows %v, want :0 on s1 and 0: on s2", segs)
	}
	bars := pageEval[int](t, page, `document.querySelectorAll('#shards tbody .bar .mean').length`)
	if bars != 6 {
		t.Errorf("%d load bars with a mean mark, want 6 (bytes, rows, writes/s of 2 shards)", bars)
	}
	pageEval[bool](t, page, recordPhases)

	moved := catalog.NewRange(-1<<62, 0)
	done := make(chan cliResult, 1)
	go func() {
		done <- runCLI(t, ctx, append(s.global, "move", "--range="+moved.String(), "--to", "s2")...)
	}()
	pagePoll(t, page, "the new move", `Object.keys(window.__phases).length > 0`)
	if shot := os.Getenv("RESHARD_UI_SCREENSHOT"); shot != "" {
		screenshotMidMove(page, shot)
	}
	var res cliResult
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("the move did not end")
	}
	if res.code != 0 {
		t.Fatalf("move: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	pagePoll(t, page, "the move done", `Object.values(window.__phases).some((p) => p[p.length - 1] === 'done')`)
	phases := pageEval[map[string][]string](t, page, `window.__phases`)
	if len(phases) != 1 {
		t.Fatalf("moves seen on the page: %v, want one", phases)
	}
	for id, seen := range phases {
		t.Logf("the page showed move %s in phases %v", id, seen)
		if len(seen) < 2 {
			t.Errorf("move %s: the page showed only %v, no phase change", id, seen)
		}
	}
	if !pageEval[bool](t, page, `window.__loadedBeforeMove === true`) {
		t.Error("the page was reloaded")
	}
	want := fmt.Sprintf(":%d s1, %d: s2", moved.Lo, moved.Lo)
	pagePoll(t, page, "the flipped range on the key line",
		`[...document.querySelectorAll('#strip .seg')].map((e) => e.dataset.range + ' ' + e.dataset.shard).join(', ') === `+jsString(want))

	planFile := filepath.Join(t.TempDir(), "plan.json")
	plan := planner.Plan{Version: 1, ID: "p1", Cluster: cluster, Moves: 1, Shards: []planner.ShardLoad{
		{Shard: "s1", Bytes: 3 << 20, BytesAfter: 2 << 20, Load: 0.75, LoadAfter: 0.5, WritesPerSec: 30, WritesPerSecAfter: 20},
		{Shard: "s2", Bytes: 1 << 20, BytesAfter: 2 << 20, Load: 0.25, LoadAfter: 0.5, WritesPerSec: 10, WritesPerSecAfter: 20}},
		Steps: []planner.Step{{N: 1, Kind: "move", Range: catalog.NewRange(catalog.Full.Lo, -1<<62), From: "s1", To: "s2", Reason: "balance"}}}
	b, _ := json.Marshal(plan)
	if err := os.WriteFile(planFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(page, chromedp.SetUploadFiles(chromedp.CSS("#plan-file"), []string{planFile})); err != nil {
		t.Fatal(err)
	}
	pagePoll(t, page, "the plan's shards before and after", `document.querySelectorAll('#plan-shards tbody tr[data-shard]').length === 2`)
	step := pageEval[string](t, page, `document.querySelector('#plan ol li').textContent`)
	if !strings.Contains(step, fmt.Sprintf(":%d: s1 → s2", int64(-1<<62))) {
		t.Errorf("plan step shows %q, want its exact range", step)
	}

	st, err := s.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owner := func(tenant int64) string { r, _ := st.Owner(tenant); return r.Shard }
	rep, err := demo.CheckTenants(ctx, s.conns, demo.Tables, s.before, owner, nil)
	if rep != nil {
		t.Logf("every tenant's rows checked:\n%s", rep)
	}
	if err != nil {
		t.Error(err)
	}
}

// screenshotMidMove saves the page as PNG, once it shows the move copying or catching up
// if it gets to see that (docs/ui.png is made so).
func screenshotMidMove(page context.Context, file string) {
	_, _ = chromedp.Run(page, chromedp.Poll[chromedp.Void](`document.querySelector('[data-phase=copying],[data-phase=catching_up]')`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(time.Minute)))
	if png, err := chromedp.Run(page, chromedp.FullScreenshot(100)); err == nil {
		_ = os.WriteFile(file, png, 0o644)
	}
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

// reshard ui serves the page until interrupted, printing where.
func TestUICommandServesUntilInterrupted(t *testing.T) {
	testenv.Integration(t)
	ctx := testContext(t, 2*time.Minute)
	env := newCatalog(t, ctx, catalog.Config{Cluster: "uicmd", Key: "tenant_id", Tables: []string{"orders"}},
		[]catalog.Shard{{Name: "s1", DSN: "host=127.0.0.1 dbname=a"}}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	run, stop := context.WithCancel(ctx)
	done := make(chan cliResult, 1)
	go func() { done <- runCLI(t, run, append(env.global, "ui", "--listen", addr)...) }()
	var m ui.Model
	for deadline := time.Now().Add(time.Minute); ; {
		resp, err := http.Get("http://" + addr + "/api/state")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("reshard ui never served /api/state: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m.Cluster != "uicmd" || len(m.Shards) != 1 {
		t.Errorf("/api/state: cluster %q, shards %+v", m.Cluster, m.Shards)
	}
	stop()
	res := <-done
	if res.code != 0 || !strings.Contains(res.stdout, "http://"+addr+"/") {
		t.Errorf("reshard ui: exit %d, stdout %q, stderr %q; want exit 0 and its address", res.code, res.stdout, res.stderr)
	}
}
