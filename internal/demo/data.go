package demo

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/reshard/reshard/catalog"
)

// OrdersPerScale is the number of orders in the data set at scale 1; with their items,
// ledger rows and events that is about 40 MB over all shards.
const OrdersPerScale = 60000

// Defaults of DataOptions.
const (
	DefaultTenants = 200
	DefaultSkew    = 1.1
	DefaultHot     = 3
	minOrders      = 3
)

// DataOptions describe the demo data set. The same options give the same data.
type DataOptions struct {
	Tenants int     // number of tenants; default 200
	Scale   float64 // multiplies the number of rows; default 1 (about 60,000 orders)
	Skew    float64 // Zipf exponent of tenant weights; default 1.1
	Hot     int     // the Hot heaviest tenants get ids inside HotRange; default 3
	// HotRange is where the heaviest tenants live; the zero value means anywhere. `reshard
	// dev` passes the first shard's range, which makes that shard the hot one.
	HotRange catalog.KeyRange
	Seed     uint64
	// Now is the end of the data's timeline (orders span 30 days before it, events
	// DataDays); zero means time.Now().
	Now time.Time
}

func (o DataOptions) withDefaults() (DataOptions, error) {
	if o.Tenants == 0 {
		o.Tenants = DefaultTenants
	}
	if o.Scale == 0 {
		o.Scale = 1
	}
	if o.Skew == 0 {
		o.Skew = DefaultSkew
	}
	if o.Hot == 0 {
		o.Hot = DefaultHot
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	switch {
	case o.Tenants < 1 || o.Tenants > 1000000:
		return o, fmt.Errorf("demo: %d tenants: use 1 to 1000000", o.Tenants)
	case o.Scale < 0 || o.Scale > 1000 || math.IsNaN(o.Scale):
		return o, fmt.Errorf("demo: scale %g: use a number above 0 and at most 1000", o.Scale)
	case o.Skew < 0 || o.Skew > 5:
		return o, fmt.Errorf("demo: skew %g: use 0 (uniform) to 5", o.Skew)
	case o.Hot < 0:
		return o, fmt.Errorf("demo: hot %d: use 0 or more", o.Hot)
	}
	if o.Hot > o.Tenants {
		o.Hot = o.Tenants
	}
	return o, nil
}

// Tenant is one tenant of the int64 data set.
type Tenant = TenantOf[int64]

// TenantOf is one tenant of the data set with keys of type K.
type TenantOf[K TenantID] struct {
	ID     K
	Rank   int // 1 is the heaviest
	Name   string
	Plan   string
	Weight float64 // share of the rows and of the write load; all weights sum to 1
	Orders int     // orders in the generated data
}

// GenerateTenants returns the tenants of the data set, heaviest first.
func GenerateTenants(opts DataOptions) ([]Tenant, error) { return GenerateTenantsOf[int64](opts) }

// maxDraws bounds the keys drawn for one tenant: a uuid tenant that must hash into a
// HotRange of a thousandth of the key line takes about a thousand.
const maxDraws = 1 << 20

// GenerateTenantsOf returns the tenants of the data set with keys of type K, heaviest first.
// The int64 keys are those GenerateTenants always made; uuid keys are drawn from the same
// random bits, a hot tenant's until its hash is inside HotRange.
func GenerateTenantsOf[K TenantID](opts DataOptions) ([]TenantOf[K], error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	n := opts.Tenants
	weights := make([]float64, n)
	var sum float64
	for r := range n {
		weights[r] = math.Pow(float64(r+1), -opts.Skew)
		sum += weights[r]
	}
	total := int(math.Round(OrdersPerScale * opts.Scale))
	spare := max(total-n*minOrders, 0)
	seen := make(map[K]bool, n)
	out := make([]TenantOf[K], n)
	for r := range n {
		w := weights[r] / sum
		var id K
		for salt := uint64(0); ; salt++ {
			if salt == maxDraws {
				return nil, fmt.Errorf("demo: no key for tenant %d inside the hot range %s: give a wider range", r+1, opts.HotRange)
			}
			h := splitmix64(opts.Seed ^ splitmix64(uint64(r)+salt<<32))
			var ok bool
			if id, ok = newTenantID[K](h, r < opts.Hot, opts.HotRange); ok && !seen[id] {
				break
			}
		}
		seen[id] = true
		plan := "starter"
		switch {
		case r < opts.Hot:
			plan = "enterprise"
		case r < max(opts.Hot, n/10):
			plan = "business"
		}
		out[r] = TenantOf[K]{
			ID:     id,
			Rank:   r + 1,
			Name:   "tenant-" + strconv.Itoa(r+1),
			Plan:   plan,
			Weight: w,
			Orders: minOrders + int(float64(spare)*w),
		}
	}
	return out, nil
}

// inRange maps a hash into r; an empty (zero) range means the whole key line.
func inRange(h uint64, r catalog.KeyRange) int64 {
	if r.Empty() {
		return int64(h)
	}
	hi := int64(math.MaxInt64)
	if !r.HiInf {
		hi = r.Hi
	}
	width := uint64(hi) - uint64(r.Lo)
	if width == 0 {
		return int64(h)
	}
	return int64(uint64(r.Lo) + h%width)
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Place groups tenants by the shard owning their key's Position under ranges (which must
// tile the key line, as a valid catalog's do).
func Place[K TenantID](tenants []TenantOf[K], ranges []catalog.Range) (map[string][]TenantOf[K], error) {
	st := catalog.State{Ranges: append([]catalog.Range(nil), ranges...)}
	sort.Slice(st.Ranges, func(i, j int) bool { return st.Ranges[i].Range.Lo < st.Ranges[j].Range.Lo })
	out := map[string][]TenantOf[K]{}
	for _, t := range tenants {
		r, ok := st.Owner(Position(t.ID))
		if !ok {
			return nil, fmt.Errorf("demo: tenant %v has no range: the ranges must cover the whole key line", t.ID)
		}
		out[r.Shard] = append(out[r.Shard], t)
	}
	return out, nil
}

// Share returns the fraction of all weight held by the k heaviest tenants.
func Share[K TenantID](tenants []TenantOf[K], k int) float64 {
	ws := make([]float64, len(tenants))
	var sum float64
	for i, t := range tenants {
		ws[i] = t.Weight
		sum += t.Weight
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(ws)))
	var top float64
	for i := 0; i < k && i < len(ws); i++ {
		top += ws[i]
	}
	if sum == 0 {
		return 0
	}
	return top / sum
}

// Counts are rows per table.
type Counts map[string]int64

var statuses = []string{"new", "paid", "paid", "paid", "paid", "paid", "shipped", "shipped", "shipped", "cancelled"}

type item struct {
	sku   string
	qty   int32
	price int64 // cents
}

type order struct {
	status  string
	created time.Time
	eventAt time.Time
	total   int64 // cents
	items   []item
}

// gen derives every row from (seed, tenant, order index), so each table can be streamed
// on its own pass without keeping rows in memory, and the passes agree.
type gen struct {
	seed   uint64
	now    time.Time
	evFrom time.Time // start of the oldest events partition with data
	buf    []item
}

func (g *gen) order(t Tenant, j int) order { return orderOf(g, t, j) }

// orderOf is tenant t's order j; a uuid tenant's rows are seeded from its key's bytes.
func orderOf[K TenantID](g *gen, t TenantOf[K], j int) order {
	rng := rand.New(rand.NewPCG(g.seed^seedOf(t.ID), uint64(j)))
	o := order{
		status:  statuses[rng.IntN(len(statuses))],
		created: g.now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour)))).Truncate(time.Microsecond),
		eventAt: g.now.Add(-time.Duration(rng.Int64N(int64(g.now.Sub(g.evFrom))))).Truncate(time.Microsecond),
	}
	g.buf = g.buf[:0]
	for range 1 + rng.IntN(4) {
		it := item{sku: fmt.Sprintf("SKU-%05d", rng.IntN(20000)), qty: int32(1 + rng.IntN(5)), price: 100 + rng.Int64N(19900)}
		o.total += int64(it.qty) * it.price
		g.buf = append(g.buf, it)
	}
	o.items = g.buf
	return o
}

// ledger returns the ledger amounts (cents) an order leaves: paid and shipped orders one
// credit, cancelled ones a credit and its refund, new ones nothing yet.
func (o order) ledger() []int64 {
	switch o.status {
	case "new":
		return nil
	case "cancelled":
		return []int64{o.total, -o.total}
	}
	return []int64{o.total}
}

func cents(c int64) pgtype.Numeric { return pgtype.Numeric{Int: big.NewInt(c), Exp: -2, Valid: true} }

// LoadShard writes the given tenants' rows with COPY in one transaction, sets the tables'
// sequences past the ids it used, and analyzes the tables. The schema must exist and hold no
// rows of these tenants. It returns the rows written per table.
func LoadShard[K TenantID](ctx context.Context, conn *pgx.Conn, tenants []TenantOf[K], opts DataOptions) (Counts, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	today := opts.Now.UTC().Truncate(24 * time.Hour)
	g := &gen{seed: opts.Seed, now: opts.Now.UTC(), evFrom: today.AddDate(0, 0, -(DataDays - 1))}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("demo: load: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	// Losing this load to a crash only means running `dev up` again.
	if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
		return nil, fmt.Errorf("demo: load: %w", err)
	}
	counts := Counts{}
	var n int64
	// tenants: balance is the sum of the ledger the other passes write.
	n, err = tx.CopyFrom(ctx, pgx.Identifier{"tenants"}, []string{"tenant_id", "name", "plan", "balance", "created_at"},
		pgx.CopyFromSlice(len(tenants), func(i int) ([]any, error) {
			t := tenants[i]
			var bal int64
			for j := range t.Orders {
				for _, a := range orderOf(g, t, j).ledger() {
					bal += a
				}
			}
			created := g.now.AddDate(0, 0, -60-t.Rank%300)
			return []any{t.ID, t.Name, t.Plan, cents(bal), created}, nil
		}))
	if err != nil {
		return nil, fmt.Errorf("demo: copy tenants: %w", err)
	}
	counts["tenants"] = n

	passes := []struct {
		table string
		cols  []string
		rows  func(t TenantOf[K], orderID int64, j int, o order, id *int64, emit func(...any))
	}{
		{"orders", []string{"tenant_id", "id", "status", "total", "created_at"},
			func(t TenantOf[K], orderID int64, _ int, o order, id *int64, emit func(...any)) {
				*id = orderID
				emit(t.ID, orderID, o.status, cents(o.total), o.created)
			}},
		{"order_items", []string{"tenant_id", "order_id", "id", "sku", "qty", "price"},
			func(t TenantOf[K], orderID int64, _ int, o order, id *int64, emit func(...any)) {
				for _, it := range o.items {
					*id++
					emit(t.ID, orderID, *id, it.sku, it.qty, cents(it.price))
				}
			}},
		{"ledger", []string{"tenant_id", "id", "amount", "memo", "created_at"},
			func(t TenantOf[K], _ int64, j int, o order, id *int64, emit func(...any)) {
				for k, a := range o.ledger() {
					*id++
					memo := "order " + strconv.Itoa(j+1)
					if k == 1 {
						memo = "refund " + strconv.Itoa(j+1)
					}
					emit(t.ID, *id, cents(a), memo, o.created)
				}
			}},
		{"events", []string{"tenant_id", "id", "created_at", "kind", "payload"},
			func(t TenantOf[K], _ int64, j int, o order, id *int64, emit func(...any)) {
				*id++
				emit(t.ID, *id, o.eventAt, "order."+o.status,
					fmt.Sprintf(`{"order": %d, "status": %q, "total_cents": %d, "items": %d, "source": "web"}`, j+1, o.status, o.total, len(o.items)))
			}},
	}
	for _, p := range passes {
		// Order ids are 1.. in (tenant, order) order on every pass, so items name their order.
		var id, orderID int64
		ti, j := 0, 0
		var pending [][]any
		emit := func(v ...any) { pending = append(pending, v) }
		src := pgx.CopyFromFunc(func() ([]any, error) {
			for len(pending) == 0 {
				if ti == len(tenants) {
					return nil, nil
				}
				t := tenants[ti]
				if j == t.Orders {
					ti, j = ti+1, 0
					continue
				}
				orderID++
				p.rows(t, orderID, j, orderOf(g, t, j), &id, emit)
				j++
			}
			r := pending[0]
			pending = pending[1:]
			return r, nil
		})
		n, err := tx.CopyFrom(ctx, pgx.Identifier{p.table}, p.cols, src)
		if err != nil {
			return nil, fmt.Errorf("demo: copy %s: %w", p.table, err)
		}
		counts[p.table] = n
		if err := setSequence(ctx, tx, p.table, id); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("demo: load commit: %w", err)
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return nil, fmt.Errorf("demo: analyze: %w", err)
	}
	return counts, nil
}

// setSequence moves table's id sequence past the ids the load used, so rows the
// application inserts later get fresh ids.
func setSequence(ctx context.Context, tx pgx.Tx, table string, last int64) error {
	var err error
	if last > 0 {
		_, err = tx.Exec(ctx, "SELECT setval(pg_get_serial_sequence($1, 'id'), $2, true)", table, last)
	} else {
		_, err = tx.Exec(ctx, "SELECT setval(pg_get_serial_sequence($1, 'id'), 1, false)", table)
	}
	if err != nil {
		return fmt.Errorf("demo: set the id sequence of %s: %w", table, err)
	}
	return nil
}
