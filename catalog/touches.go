package catalog

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Touch is what one etcd watch response changed under the cluster's prefix: the keys put
// or deleted (relative to the prefix, e.g. "stats/shards/s1", "history/...", "locks/...")
// and the revision it ends at.
type Touch struct {
	Revision int64
	Keys     []string
}

// Touched reports whether any key of the touch starts with one of prefixes.
func (t Touch) Touched(prefixes ...string) bool {
	for _, k := range t.Keys {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
	}
	return false
}

// Key prefixes a Touch names, relative to the cluster's prefix, for the parts of the
// catalog the Cache leaves out.
const (
	TouchStats      = pfxStats
	TouchHistory    = pfxHistory
	TouchLocks      = pfxLocks
	TouchPartitions = "partitions/"
)

// Touches follows every change under the cluster's prefix after revision rev and sends
// what each watch response touched: for readers that keep their own copy of what the
// Cache leaves out (stats, history, locks, the partition run) and re-read a part only
// when it changed. The channel is closed when ctx ends or the watch fails (rev already
// compacted, etcd unreachable): read again what you keep, then call Touches again from
// the revision of that read.
func (s *Store) Touches(ctx context.Context, rev int64) <-chan Touch {
	out := make(chan Touch)
	go func() {
		defer close(out)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev + 1)}
		for resp := range s.cli.Watch(wctx, s.prefix, opts...) {
			if resp.Err() != nil || resp.Canceled {
				return
			}
			if len(resp.Events) == 0 {
				continue // a progress notification
			}
			t := Touch{Revision: resp.Header.Revision}
			for _, ev := range resp.Events {
				t.Keys = append(t.Keys, s.rel(ev.Kv.Key))
			}
			select {
			case out <- t:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
