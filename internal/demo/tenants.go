package demo

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Changes are what a load's transactions did to each tenant's rows since it started, as the
// loader knows them from the transactions it ran.
type Changes = ChangesOf[int64]

// ChangesOf are Changes of tenants with keys of type K.
type ChangesOf[K TenantID] struct {
	// Rows is the net change of the row count per tenant and table made by acknowledged
	// transactions (rows inserted minus rows deleted, as the statements reported them).
	Rows map[K]Counts `json:"rows,omitempty"`
	// Touched tenants had an acknowledged transaction, or one whose outcome is unknown: the
	// contents of their rows may have changed, so only counts can be checked.
	Touched map[K]bool `json:"touched,omitempty"`
	// Uncertain tenants had a transaction whose COMMIT outcome is unknown: even their
	// counts cannot be predicted.
	Uncertain map[K]bool `json:"uncertain,omitempty"`
	// Quiet tenants were never written to by the load (LoadOptions.Quiet).
	Quiet map[K]bool `json:"quiet,omitempty"`
}

// NewChanges returns empty Changes.
func NewChanges() *Changes { return NewChangesOf[int64]() }

// NewChangesOf returns empty Changes of tenants with keys of type K.
func NewChangesOf[K TenantID]() *ChangesOf[K] {
	return &ChangesOf[K]{Rows: map[K]Counts{}, Touched: map[K]bool{}, Uncertain: map[K]bool{}, Quiet: map[K]bool{}}
}

// Add merges o into c (several loads, or a load's workers). A tenant quiet in one load but
// written by another is not quiet.
func (c *ChangesOf[K]) Add(o *ChangesOf[K]) {
	if o == nil {
		return
	}
	for t, counts := range o.Rows {
		if c.Rows[t] == nil {
			c.Rows[t] = Counts{}
		}
		for table, n := range counts {
			c.Rows[t][table] += n
		}
	}
	for t := range o.Touched {
		c.Touched[t] = true
	}
	for t := range o.Uncertain {
		c.Uncertain[t] = true
	}
	for t := range o.Quiet {
		c.Quiet[t] = true
	}
	for t := range c.Quiet {
		if c.Touched[t] {
			delete(c.Quiet, t)
		}
	}
}

// ShardTenants is what a tenant check found on one shard, counting the tenants it owns.
type ShardTenants struct {
	Shard string `json:"shard"`
	// Exact tenants had no write since the start: count and hash equal their start, of
	// which Quiet are those the load was told never to write.
	Exact int `json:"exact"`
	Quiet int `json:"quiet"`
	// Counted tenants had acknowledged writes: each table's count is the start's plus the
	// writes' net change.
	Counted int `json:"counted"`
	// Uncertain tenants had a write of unknown outcome: only the invariants hold them.
	Uncertain int   `json:"uncertain"`
	Rows      int64 `json:"rows"` // rows of the tenants it owns, on it
}

// TenantReport is the outcome of CompareTenants: per shard, the tenants checked.
type TenantReport struct {
	Shards   []ShardTenants `json:"shards"`
	Problems int            `json:"problems"`
}

// Print writes one line per shard.
func (r *TenantReport) Print(w io.Writer) {
	for _, s := range r.Shards {
		fmt.Fprintf(w, "  %s: %d tenants, %d rows: %d untouched (%d quiet) equal to the start in count and hash, %d written with count = start + acknowledged changes, %d uncertain (invariants only)\n",
			s.Shard, s.Exact+s.Counted+s.Uncertain, s.Rows, s.Exact, s.Quiet, s.Counted, s.Uncertain)
	}
}

// String is what Print writes, for a test's log.
func (r *TenantReport) String() string {
	var b strings.Builder
	r.Print(&b)
	return b.String()
}

// CompareTenants checks every tenant's rows on every shard of after against the start
// (before) and what the load did since (ch; nil: nothing was written): a tenant's rows are
// all on its owner and nowhere else; a tenant no write touched has exactly its starting
// rows (count and hash of every table); a tenant with acknowledged writes has, per table,
// its starting count plus their net change; a tenant with a write of unknown outcome is
// only counted. owner says which shard owns a tenant now. Every shard in after must have
// been in before. The error lists (bounded) each tenant and table that differs.
func CompareTenants[K TenantID](before, after SnapshotOf[K], owner func(tenant K) string, ch *ChangesOf[K]) (*TenantReport, error) {
	if ch == nil {
		ch = NewChangesOf[K]()
	}
	shards := make([]string, 0, len(after))
	for s := range after {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	per := map[string]*ShardTenants{}
	for _, s := range shards {
		per[s] = &ShardTenants{Shard: s}
	}
	var probs problems
	add := probs.add
	var all []FingerprintsOf[K]
	for _, s := range shards {
		all = append(all, after[s])
		if _, ok := before[s]; !ok {
			add("shard %s: no fingerprint at the start", s)
		}
	}
	for _, f := range before {
		all = append(all, f)
	}
	deltas := FingerprintsOf[K]{}
	for t := range ch.Rows {
		deltas[t] = nil
	}
	for _, t := range unionTenants(append(all, deltas)...) {
		start, ok := startOf(before, t, add)
		if !ok {
			continue
		}
		own := owner(t)
		class := tenantClass(ch, t)
		for _, s := range shards {
			got := after[s][t]
			if s != own {
				for _, table := range unionTables(got) {
					add("tenant %v (%s): %s on %s: %d rows, but %s does not own it (owner %s)", t, class, table, s, got[table].Rows, s, own)
				}
				continue
			}
			countTenant(per[s], class, got)
			compareOwner(t, class, s, start, got, ch.Rows[t], add)
		}
		if per[own] == nil {
			add("tenant %v (%s): its owner %q is not among the shards checked", t, class, own)
		}
	}
	rep := &TenantReport{Problems: probs.n}
	for _, s := range shards {
		rep.Shards = append(rep.Shards, *per[s])
	}
	return rep, probs.err("tenants' rows differ from what they should be")
}

// startOf is a tenant's starting rows: from the one shard that held them.
func startOf[K TenantID](before SnapshotOf[K], t K, add func(string, ...any)) (map[string]TableFingerprint, bool) {
	var on []string
	for s, f := range before {
		if len(f[t]) > 0 {
			on = append(on, s)
		}
	}
	if len(on) > 1 {
		sort.Strings(on)
		add("tenant %v: rows on %s at the start: take the start snapshot while each tenant lives on one shard", t, strings.Join(on, " and "))
		return nil, false
	}
	if len(on) == 0 {
		return nil, true
	}
	return before[on[0]][t], true
}

func tenantClass[K TenantID](ch *ChangesOf[K], t K) string {
	switch {
	case ch.Uncertain[t]:
		return "uncertain"
	case ch.Touched[t]:
		return "written"
	case ch.Quiet[t]:
		return "quiet"
	}
	return "untouched"
}

func countTenant(st *ShardTenants, class string, got map[string]TableFingerprint) {
	for _, f := range got {
		st.Rows += f.Rows
	}
	switch class {
	case "uncertain":
		st.Uncertain++
	case "written":
		st.Counted++
	case "quiet":
		st.Quiet++
		st.Exact++
	default:
		st.Exact++
	}
}

// compareOwner checks a tenant's rows on its owner against its start and its changes.
func compareOwner[K TenantID](t K, class, shard string, start, got map[string]TableFingerprint, delta Counts, add func(string, ...any)) {
	if class == "uncertain" {
		return
	}
	for _, table := range uniqueSorted(append(unionTables(start, got), unionTables(delta)...)) {
		s, g, d := start[table], got[table], delta[table]
		want := s.Rows + d
		switch {
		case g.Rows != want && d != 0:
			add("tenant %v (%s): %s on %s: %d rows, want %d (%d at the start, %+d by acknowledged writes)", t, class, table, shard, g.Rows, want, s.Rows, d)
		case g.Rows != want:
			add("tenant %v (%s): %s on %s: %d rows, want %d as at the start", t, class, table, shard, g.Rows, want)
		case class != "written" && g.Rows > 0 && g.Hash != s.Hash:
			add("tenant %v (%s): %s on %s: %d rows as at the start, but their contents differ (hash)", t, class, table, shard, g.Rows)
		}
	}
}

// CheckTenants fingerprints the tables on every shard and compares them with before (see
// CompareTenants).
func CheckTenants[K TenantID](ctx context.Context, shards map[string]Querier, tables []string, before SnapshotOf[K], owner func(tenant K) string, ch *ChangesOf[K]) (*TenantReport, error) {
	return CheckTenantsColumns(ctx, shards, tables, nil, before, owner, ch)
}

// CheckTenantsColumns is CheckTenants with the fingerprints taken over the columns cols
// names, those before was taken over (a column added since is left out; see TableColumns).
func CheckTenantsColumns[K TenantID](ctx context.Context, shards map[string]Querier, tables []string, cols Columns, before SnapshotOf[K], owner func(tenant K) string, ch *ChangesOf[K]) (*TenantReport, error) {
	after, err := TakeSnapshotColumnsOf[K](ctx, shards, tables, cols)
	if err != nil {
		return nil, err
	}
	return CompareTenants(before, after, owner, ch)
}

// QuietTenants picks tenants for LoadOptions.Quiet: every n-th tenant in key line order
// (Position: the id, or its hash), never one of the busiest (rank <= busiest, which tests
// move on their own under the load). So any key range holding n tenants that are not among
// the busiest holds a quiet one: every shard, and every moved range of more than a few
// tenants, has tenants whose rows must come out exactly as they went in.
func QuietTenants[K TenantID](tenants []TenantOf[K], n, busiest int) map[K]bool {
	quiet := map[K]bool{}
	if n < 1 {
		return quiet
	}
	ts := append([]TenantOf[K](nil), tenants...)
	sort.Slice(ts, func(i, j int) bool { return keyLess(ts[i].ID, ts[j].ID) })
	seen := n / 2 // the first quiet tenant comes half a step in
	for _, t := range ts {
		if t.Rank <= busiest {
			continue
		}
		if seen++; seen >= n {
			quiet[t.ID] = true
			seen = 0
		}
	}
	return quiet
}
