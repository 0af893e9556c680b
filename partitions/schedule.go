package partitions

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/reshard/reshard/catalog"
)

// ElectionName is the etcd election the schedulers of one cluster campaign in.
const ElectionName = "scheduler"

// Elector is what the scheduler needs from the catalog: the current state, and an
// election so that only one of several schedulers acts. *catalog.Store is one.
type Elector interface {
	Load(ctx context.Context) (*catalog.State, error)
	Campaign(ctx context.Context, name string, opts ...catalog.LockOption) (*catalog.Leader, error)
}

// Recorder keeps the outcome of each run (in the catalog, for `reshard status`); a
// *catalog.Store is one. It gets the leadership the run was made under, so that the write
// can be refused if that leadership was lost meanwhile (catalog.Store.PutPartitionRun
// compares it).
type Recorder interface {
	PutPartitionRun(ctx context.Context, leader *catalog.Leader, run catalog.PartitionRun) error
}

// maxRecordedErrors keeps a run record small enough for one etcd value.
const maxRecordedErrors = 20

// Summarize turns the per-shard reports of one run into its record.
func Summarize(start time.Time, took time.Duration, reps []*Report) catalog.PartitionRun {
	r := catalog.PartitionRun{Time: start.UTC(), Seconds: took.Seconds(), Outcome: catalog.PartitionRunOK, MinRunway: -1}
	nerr := 0
	for _, rep := range reps {
		sr := catalog.PartitionShardRun{Shard: rep.Shard, Error: rep.Error}
		for _, t := range rep.Tables {
			sr.Tables = append(sr.Tables, catalog.PartitionTableRun{Table: t.Table, Runway: t.Runway, RunwayUntil: t.RunwayUntil,
				Created: len(t.Created), Detached: len(t.Detached), Dropped: len(t.Dropped), Errors: len(t.Errors)})
			r.Created += len(t.Created)
			r.Detached += len(t.Detached)
			r.Dropped += len(t.Dropped)
			if r.MinRunway < 0 || t.Runway < r.MinRunway {
				r.MinRunway = t.Runway
			}
		}
		for _, e := range rep.Errors() {
			nerr++
			if len(r.Errors) < maxRecordedErrors {
				r.Errors = append(r.Errors, rep.Shard+": "+e)
			}
		}
		r.Shards = append(r.Shards, sr)
	}
	if nerr > maxRecordedErrors {
		r.Errors = append(r.Errors, fmt.Sprintf("... and %d more", nerr-maxRecordedErrors))
	}
	if nerr > 0 {
		r.Outcome = catalog.PartitionRunErrors
	}
	return r
}

// Scheduler runs partition maintenance on every shard of the catalog each interval. Many
// may run: an etcd election makes one act, and another takes over within the lease TTL if
// it dies (at once if it stops cleanly). Should two ever act at once (a leader cut off
// from etcd before its lease ran out), Apply's per-shard advisory lock keeps them from
// working on the same shard together.
type Scheduler struct {
	Catalog  Elector
	Connect  Connector
	Recorder Recorder // may be nil
	Every    time.Duration
	Fleet    FleetOptions
	Holder   string           // names this scheduler in run records
	TTL      int              // election lease in seconds; default 10
	Now      func() time.Time // default time.Now; a fake clock in tests
	Log      *slog.Logger     // nil: no log
}

func (s *Scheduler) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Run campaigns, and while leader runs maintenance at once and then every interval. It
// returns nil when ctx ends (SIGTERM), after giving up leadership so another scheduler
// takes over without waiting for the lease to expire.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Every <= 0 {
		return fmt.Errorf("schedule interval %v: use a positive duration such as 1h", s.Every)
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	ttl := s.TTL
	if ttl <= 0 {
		ttl = 10
	}
	for {
		s.log().Info("campaigning for leadership", "election", ElectionName)
		leader, err := s.Catalog.Campaign(ctx, ElectionName, catalog.WithTTL(ttl))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log().Warn("campaign failed, retrying", "err", err)
			if !sleep(ctx, min(s.Every, 5*time.Second)) {
				return nil
			}
			continue
		}
		s.log().Info("leader: running partition maintenance", "every", s.Every.String())
		s.lead(ctx, leader)
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := leader.Resign(rctx); err != nil {
				s.log().Warn("resign", "err", err)
			}
			cancel()
			s.log().Info("stopped")
			return nil
		}
		s.log().Warn("lost leadership (etcd lease expired); campaigning again")
	}
}

func (s *Scheduler) lead(ctx context.Context, leader *catalog.Leader) {
	// A run stops as soon as leadership is lost: another scheduler may already act.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-leader.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(s.Every)
	defer t.Stop()
	for {
		s.once(ctx, leader)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Scheduler) once(ctx context.Context, leader *catalog.Leader) {
	start := time.Now()
	now := s.Now()
	rec := catalog.PartitionRun{Time: now.UTC(), Outcome: catalog.PartitionRunFailed, MinRunway: -1}
	st, err := s.Catalog.Load(ctx)
	switch {
	case err != nil:
		rec.Errors = []string{"load the catalog: " + err.Error()}
	case len(st.Config.Partitions) == 0:
		rec.Outcome = catalog.PartitionRunIdle
	default:
		fo := s.Fleet
		fo.Migrations = st.Migrations
		reps, err := Fleet(ctx, st.Shards, st.Config.Partitions, now, fo, s.Connect)
		if reps == nil {
			rec.Errors = []string{err.Error()}
			break
		}
		for _, rep := range reps {
			for _, t := range rep.Tables {
				if t.RetentionHeld != "" {
					s.log().Info("skipped retention", "table", t.Table, "shard", rep.Shard, "why", t.RetentionHeld)
				}
			}
		}
		rec = Summarize(now, time.Since(start), reps)
		if err != nil {
			rec.Outcome = catalog.PartitionRunFailed
			rec.Errors = append(rec.Errors, err.Error())
		}
	}
	rec.Seconds = time.Since(start).Seconds()
	rec.Holder = s.Holder
	if ctx.Err() != nil {
		return // stopped or no longer leader: the next leader records its own run
	}
	level := slog.LevelInfo
	if rec.Outcome == catalog.PartitionRunErrors || rec.Outcome == catalog.PartitionRunFailed {
		level = slog.LevelWarn
	}
	s.log().Log(ctx, level, "partition run", "at", rec.Time.Format(time.RFC3339), "outcome", rec.Outcome, "created", rec.Created,
		"detached", rec.Detached, "dropped", rec.Dropped, "min_runway", rec.MinRunway, "errors", len(rec.Errors))
	for _, e := range rec.Errors {
		s.log().Warn("partition run error", "err", e)
	}
	if s.Recorder != nil {
		if err := s.Recorder.PutPartitionRun(ctx, leader, rec); err != nil {
			s.log().Warn("record the run in the catalog", "err", err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
