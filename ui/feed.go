package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/partitions"
)

// coalesce is how long the feed gathers changes before it rebuilds the model: a burst of
// writes (a flip and its history, a stats batch) becomes one update, and a change still
// reaches the page well within a second.
const coalesce = 100 * time.Millisecond

// retryEvery is how often the feed retries a part it failed to read.
const retryEvery = 2 * time.Second

// Feed keeps the page's model current. The catalog's state (config, shards, ranges,
// migrations) comes from a catalog.Cache, the watch-fed copy the resolver uses; the parts
// the cache leaves out (stats, history, locks, the partition run) are re-read only when a
// watch of the cluster's keys (Store.Touches) says they changed. So the page follows every
// change within about coalesce, and an idle cluster costs nothing.
type Feed struct {
	store  *catalog.Store
	cache  *catalog.Cache
	now    func() time.Time
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	cur *published

	// Owned by run.
	parts  parts
	dirty  dirty
	unfin  string // the unfinished migrations the drivers were read for
	rev    int64  // the revision the touched parts were last read at
	failed bool   // some part could not be read: retry
	// changed closes when the cache publishes a state newer than the one last built from.
	changed <-chan struct{}
}

// published is one model, as sent: Changed closes when a newer one is published.
type published struct {
	model   *Model
	json    []byte
	changed chan struct{}
}

// parts are what the feed read besides the cached state.
type parts struct {
	stats     *catalog.Stats
	history   []catalog.Event
	run       *catalog.PartitionRun
	scheduler string
	drivers   map[string]Driver
	problems  map[string]string // by part
}

type dirty struct{ stats, history, run, locks bool }

func (d dirty) any() bool { return d.stats || d.history || d.run || d.locks }

var everything = dirty{true, true, true, true}

// StartFeed loads the catalog and starts following it until ctx ends or Close. It fails
// when the catalog cannot be read at all (no catalog, etcd unreachable).
func StartFeed(ctx context.Context, store *catalog.Store) (*Feed, error) {
	return startFeed(ctx, store, time.Now)
}

func startFeed(ctx context.Context, store *catalog.Store, now func() time.Time) (*Feed, error) {
	cache, err := store.Watch(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Feed{store: store, cache: cache, now: now, cancel: cancel, done: make(chan struct{}),
		parts: parts{drivers: map[string]Driver{}, problems: map[string]string{}}}
	f.refresh(ctx, everything)
	go f.run(ctx)
	return f, nil
}

// Close stops following the catalog.
func (f *Feed) Close() {
	f.cancel()
	<-f.done
	f.cache.Close()
}

// Current is the latest model, its JSON, and a channel closed when a newer one is out.
func (f *Feed) Current() (*Model, []byte, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur.model, f.cur.json, f.cur.changed
}

func (f *Feed) publish(m *Model) {
	b, err := json.Marshal(m)
	if err != nil {
		// A Model holds only plain values: this cannot happen, but never publish half.
		panic(fmt.Sprintf("ui: encode the page model: %v", err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.cur
	f.cur = &published{model: m, json: b, changed: make(chan struct{})}
	if old != nil {
		close(old.changed)
	}
}

func (f *Feed) run(ctx context.Context) {
	defer close(f.done)
	var touches <-chan catalog.Touch
	if f.rev > 0 {
		touches = f.store.Touches(ctx, f.rev)
	}
	retry := time.NewTicker(retryEvery)
	defer retry.Stop()
	for {
		var d dirty
		select {
		case <-ctx.Done():
			return
		case <-f.changed:
		case t, ok := <-touches:
			if !ok {
				touches, d = nil, everything
			} else {
				d = touchedParts(t)
			}
		case <-retry.C:
			if !f.failed && touches != nil && f.cache.Err() == nil {
				continue
			}
			d = everything
		}
		d = f.gather(ctx, d, &touches)
		f.refresh(ctx, d)
		if touches == nil && ctx.Err() == nil && f.rev > 0 {
			// The parts were just read at f.rev: follow their changes from there.
			touches = f.store.Touches(ctx, f.rev)
		}
	}
}

// gather waits coalesce for more changes, adding what they touched.
func (f *Feed) gather(ctx context.Context, d dirty, touches *<-chan catalog.Touch) dirty {
	timer := time.NewTimer(coalesce)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return d
		case <-timer.C:
			return d
		case t, ok := <-*touches:
			if !ok {
				*touches = nil
				d = everything
				continue
			}
			more := touchedParts(t)
			d = dirty{d.stats || more.stats, d.history || more.history, d.run || more.run, d.locks || more.locks}
		}
	}
}

func touchedParts(t catalog.Touch) dirty {
	return dirty{
		stats:   t.Touched(catalog.TouchStats),
		history: t.Touched(catalog.TouchHistory),
		run:     t.Touched(catalog.TouchPartitions),
		locks:   t.Touched(catalog.TouchLocks),
	}
}

// refresh re-reads the parts d names (and the drivers when the unfinished migrations
// changed), then builds and publishes the model from the cached state and the parts.
func (f *Feed) refresh(ctx context.Context, d dirty) {
	// The channel before the state: a change published between the two wakes run at once.
	f.changed = f.cache.Changed()
	st := f.cache.State()
	unfin := unfinished(st)
	if unfin != f.unfin {
		d.locks = true
	}
	p := &f.parts
	read := func(part string, fn func() error) {
		if err := fn(); err != nil {
			if !errors.Is(err, context.Canceled) {
				p.problems[part] = fmt.Sprintf("%s: %v", part, err)
			}
			return
		}
		delete(p.problems, part)
	}
	if d.stats {
		read("stats", func() error {
			s, err := f.store.LoadStats(ctx)
			if err == nil {
				p.stats, f.rev = s, s.Revision
				if len(s.Shards) == 0 && len(s.Ranges) == 0 {
					p.stats = nil
				}
			}
			return err
		})
	}
	if d.history {
		read("history", func() (err error) { p.history, err = f.store.History(ctx, historyRead); return err })
	}
	if d.run {
		read("partition run", func() (err error) { p.run, err = f.store.LastPartitionRun(ctx); return err })
	}
	if d.locks {
		read("locks", func() error { return f.readLocks(ctx, st) })
		if p.problems["locks"] == "" {
			f.unfin = unfin
		}
	}
	f.failed = len(p.problems) > 0
	f.publish(Build(f.sources(st)))
}

func (f *Feed) readLocks(ctx context.Context, st *catalog.State) error {
	leader, err := f.store.LeaderOf(ctx, partitions.ElectionName)
	if err != nil {
		return err
	}
	drivers := map[string]Driver{}
	for id, m := range st.Migrations {
		if m.Terminal() {
			continue
		}
		holder, held, err := f.store.MigrationLockHolder(ctx, id)
		if err != nil {
			return err
		}
		drivers[id] = Driver{Held: held, Holder: holder}
	}
	f.parts.scheduler, f.parts.drivers = leader, drivers
	return nil
}

func (f *Feed) sources(st *catalog.State) Sources {
	p := f.parts
	src := Sources{State: st, Stats: p.stats, History: p.history, Run: p.run, Scheduler: p.scheduler,
		Drivers: p.drivers, Now: f.now()}
	if err := f.cache.Err(); err != nil {
		src.Problems = append(src.Problems, fmt.Sprintf("catalog watch (the page may be behind): %v", err))
	}
	for _, part := range []string{"stats", "history", "partition run", "locks"} {
		if msg := p.problems[part]; msg != "" {
			src.Problems = append(src.Problems, msg)
		}
	}
	return src
}

// unfinished names the unfinished migrations, to notice one starting or ending.
func unfinished(st *catalog.State) string {
	var ids []string
	for id, m := range st.Migrations {
		if !m.Terminal() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	b, _ := json.Marshal(ids)
	return string(b)
}
