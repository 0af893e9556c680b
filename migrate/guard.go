package migrate

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/cutover"
)

// guard installs the fence trigger on both shards before anything is copied, so the
// cutover takes no DDL lock, and fences the range on the target with this driver's token:
// until the flip, the target refuses client writes to the incoming range (reshard's own
// sessions pass), so no write a misrouted client made there can be lost to a rollback.
func (e *Executor) guard(ss *session) error {
	ctx, m, env := ss.ctx, ss.m, ss.env
	if err := cutover.InstallGuard(ctx, env.Source, env.Keyspace(), env.Tables); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if err := cutover.InstallGuard(ctx, env.Target, env.Keyspace(), env.Tables); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if err := env.MayWrite(); err != nil {
		return err
	}
	if err := cutover.SetFence(ctx, env.Target, m.ID, m.Range, env.Tables, env.Token()); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	return nil
}

// releaseGuards removes the fence guard from the source and the target of m, which has
// ended without flipping, where no fence is left and no other unfinished migration uses
// the shard. The migration has ended by then, so a guard that cannot go now is only
// logged: it costs a trigger call per write, and the next rollback, cancel or
// `cleanup --drop-fence` on the shard removes it.
func releaseGuards(ctx context.Context, env cutover.Env, m *catalog.Migration) {
	log := env.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, sh := range []struct {
		db    cutover.Conn
		shard string
	}{{env.Source, m.Source}, {env.Target, m.Target}} {
		if sh.db == nil {
			continue
		}
		kept, err := cutover.RemoveGuard(ctx, sh.db, env.Tables, guardInUse(env.Catalog, sh.shard, m.ID))
		switch {
		case err != nil:
			log.Warn("fence guard trigger not removed", "shard", sh.shard, "err", err)
		case kept != "":
			log.Info("fence guard trigger kept", "shard", sh.shard, "why", kept)
		}
	}
}

// guardInUse is cutover.RemoveGuard's question for shard: the unfinished migrations
// other than self that have it as source or target. Each of them fences the shard at its
// cutover (the source; the target until the flip), so its trigger must stay.
func guardInUse(cat cutover.Catalog, shard, self string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		st, err := cat.Load(ctx)
		if err != nil {
			return "", fmt.Errorf("read the migrations using shard %s: %w", shard, err)
		}
		var users []string
		for _, m := range st.Migrations {
			if m.ID != self && !m.Terminal() && (m.Source == shard || m.Target == shard) {
				users = append(users, fmt.Sprintf("%s (%s, %s -> %s)", m.ID, m.Phase, m.Source, m.Target))
			}
		}
		if len(users) == 0 {
			return "", nil
		}
		sort.Strings(users)
		return "unfinished migrations use the shard: " + strings.Join(users, ", "), nil
	}
}
