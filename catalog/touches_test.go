package catalog

import (
	"context"
	"testing"
	"time"
)

// Touches names the parts of the catalog each change touched, stats and history
// included, and ends its channel when the revision it follows from was compacted.
func TestTouchesNameWhatChanged(t *testing.T) {
	s, cli := testStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := initDemo(t, s)
	ch := s.Touches(ctx, st.Revision)
	next := func(what string) Touch {
		t.Helper()
		select {
		case tc, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the channel closed", what)
			}
			return tc
		case <-ctx.Done():
			t.Fatalf("%s: no touch seen", what)
		}
		return Touch{}
	}
	if err := s.PutStats(ctx, &Stats{Shards: map[string]ShardStats{"s1": {Shard: "s1", Bytes: 10, Rows: 1}}}); err != nil {
		t.Fatal(err)
	}
	if tc := next("stats"); !tc.Touched(TouchStats) || tc.Touched(TouchHistory, TouchLocks, TouchPartitions) {
		t.Errorf("stats write: touch %+v", tc)
	}
	newMigration(t, s, "m1", st.Ranges[1], "s3")
	tc := next("migration")
	if !tc.Touched(TouchHistory) || !tc.Touched(pfxMigrations) || tc.Touched(TouchStats) {
		t.Errorf("migration write: touch %+v", tc)
	}
	if tc.Revision <= st.Revision {
		t.Errorf("touch revision %d, not after %d", tc.Revision, st.Revision)
	}

	// From a compacted revision there is nothing to follow: the channel ends.
	if _, err := cli.Compact(ctx, tc.Revision); err != nil {
		t.Fatal(err)
	}
	old := s.Touches(ctx, st.Revision)
	for range old {
	}
	if ctx.Err() != nil {
		t.Fatal("the channel of a compacted revision did not close")
	}
}
