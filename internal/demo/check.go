package demo

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Querier is a *pgx.Conn or a *pgxpool.Pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// maxProblems bounds the problems a check lists; the count says how many there were.
const maxProblems = 20

// problems collects what a check finds: every one is counted, the first maxProblems are
// kept.
type problems struct {
	list []string
	n    int
}

func (p *problems) add(format string, args ...any) {
	p.n++
	if len(p.list) < maxProblems {
		p.list = append(p.list, fmt.Sprintf(format, args...))
	}
}

// err is nil when nothing was found, and otherwise lists what was kept, sorted, and says
// how many more there were.
func (p *problems) err(what string) error {
	if p.n == 0 {
		return nil
	}
	sort.Strings(p.list)
	more := ""
	if p.n > len(p.list) {
		more = fmt.Sprintf("\n  ... and %d more", p.n-len(p.list))
	}
	return fmt.Errorf("demo: %s: %d problem(s):\n  - %s%s", what, p.n, strings.Join(p.list, "\n  - "), more)
}

// CheckBalances verifies on one shard that every tenant's balance equals the sum of its
// ledger rows, and that no ledger row belongs to a tenant the shard does not hold.
func CheckBalances(ctx context.Context, db Querier) error {
	rows, err := db.Query(ctx, `
		SELECT coalesce(t.tenant_id, l.tenant_id)::text, t.balance::text, coalesce(l.sum, 0)::text, t.tenant_id IS NULL
		FROM tenants t
		FULL JOIN (SELECT tenant_id, sum(amount) AS sum FROM ledger GROUP BY tenant_id) l USING (tenant_id)
		WHERE t.tenant_id IS NULL OR t.balance <> coalesce(l.sum, 0)`)
	if err != nil {
		return fmt.Errorf("demo: check balances: %w", err)
	}
	defer rows.Close()
	var probs problems
	for rows.Next() {
		var tenant string
		var bal *string
		var sum string
		var orphan bool
		if err := rows.Scan(&tenant, &bal, &sum, &orphan); err != nil {
			return fmt.Errorf("demo: check balances: %w", err)
		}
		if orphan {
			probs.add("tenant %s: ledger rows (sum %s) but no tenants row", tenant, sum)
		} else {
			probs.add("tenant %s: balance %s but ledger sums to %s", tenant, *bal, sum)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("demo: check balances: %w", err)
	}
	return probs.err("balance = sum(ledger) does not hold")
}

// CheckAcked verifies that every acknowledged ledger row is present exactly once, with its
// amount, on the shard owner names for its tenant. Unless elsewhereOK (a source whose
// moved rows are not cleaned up yet), it must be on no other shard either.
func CheckAcked[K TenantID](ctx context.Context, shards map[string]Querier, owner func(tenant K) string, acked []LedgerWriteOf[K], elsewhereOK bool) error {
	tenants := make([]K, len(acked))
	ids := make([]int64, len(acked))
	for i, a := range acked {
		tenants[i], ids[i] = a.Tenant, a.ID
	}
	type key struct {
		tenant K
		id     int64
	}
	type seen struct {
		count  int64
		amount int64
	}
	found := map[string]map[key]seen{}
	for name, db := range shards {
		rows, err := db.Query(ctx, `
			SELECT a.tenant_id, a.id, count(l.id), coalesce(min(l.amount * 100), 0)::bigint
			FROM unnest($1::`+sqlType[K]()+`[], $2::bigint[]) AS a(tenant_id, id)
			LEFT JOIN ledger l ON l.tenant_id = a.tenant_id AND l.id = a.id
			GROUP BY a.tenant_id, a.id`, tenants, ids)
		if err != nil {
			return fmt.Errorf("demo: check acknowledged writes on %s: %w", name, err)
		}
		m := map[key]seen{}
		for rows.Next() {
			var k key
			var s seen
			if err := rows.Scan(&k.tenant, &k.id, &s.count, &s.amount); err != nil {
				rows.Close()
				return fmt.Errorf("demo: check acknowledged writes on %s: %w", name, err)
			}
			m[k] = s
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("demo: check acknowledged writes on %s: %w", name, err)
		}
		found[name] = m
	}
	var probs problems
	add := probs.add
	for _, a := range acked {
		k := key{a.Tenant, a.ID}
		own := owner(a.Tenant)
		m, ok := found[own]
		if !ok {
			add("ledger %v/%d: owner shard %q is not among the shards checked", a.Tenant, a.ID, own)
			continue
		}
		switch s := m[k]; {
		case s.count == 0:
			add("ledger %v/%d: acknowledged but missing on its owner %s", a.Tenant, a.ID, own)
		case s.count > 1:
			add("ledger %v/%d: present %d times on %s", a.Tenant, a.ID, s.count, own)
		case s.amount != a.Amount:
			add("ledger %v/%d: amount %d cents on %s, %d acknowledged", a.Tenant, a.ID, s.amount, own, a.Amount)
		}
		if elsewhereOK {
			continue
		}
		for name, m := range found {
			if name != own && m[k].count > 0 {
				add("ledger %v/%d: also present on %s (owner is %s)", a.Tenant, a.ID, name, own)
			}
		}
	}
	return probs.err("acknowledged writes")
}
