package mover

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
)

const textSettingsSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE vals (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	d         date,
	ts        timestamp,
	tz        timestamptz,
	iv        interval,
	f         float8,
	r         real,
	fa        float8[], -- large: stored out of line
	PRIMARY KEY (tenant_id, id)
);
-- An array of an enum: copied in text format.
CREATE TABLE vals_text (
	tenant_id bigint NOT NULL,
	id        bigint NOT NULL,
	m         mood[],
	d         date,
	ts        timestamp,
	iv        interval,
	f         float8,
	PRIMARY KEY (tenant_id, id)
);
`

// pinnedPool opens a pool whose sessions write values as text the same way whatever the
// server's defaults, for comparing rows of two servers as text.
func pinnedPool(t testing.TB, ctx context.Context, dsn string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(ctx, dsn+" DateStyle=ISO IntervalStyle=postgres extra_float_digits=3 TimeZone=UTC")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestMoveExactWhateverTheServersTextSettings: a source whose defaults write dates,
// intervals and floats differently (DateStyle 'SQL, DMY', IntervalStyle sql_standard,
// extra_float_digits 0) and a target with other defaults still get exactly the same values
// through the text-format copy, the catch-up stream, and the values read back from the
// source for rows entering the range with unchanged TOASTed values.
func TestMoveExactWhateverTheServersTextSettings(t *testing.T) {
	ctx := context.Background()
	srcPG, dstPG, src, _ := pair(t, ctx, textSettingsSchema)
	for _, s := range []string{`ALTER SYSTEM SET DateStyle = 'SQL, DMY'`, `ALTER SYSTEM SET IntervalStyle = 'sql_standard'`,
		`ALTER SYSTEM SET extra_float_digits = 0`, `ALTER SYSTEM SET TimeZone = 'America/New_York'`, `SELECT pg_reload_conf()`} {
		srcPG.Exec(ctx, s)
	}
	for _, s := range []string{`ALTER SYSTEM SET DateStyle = 'SQL, MDY'`, `ALTER SYSTEM SET IntervalStyle = 'iso_8601'`,
		`ALTER SYSTEM SET extra_float_digits = 1`, `ALTER SYSTEM SET TimeZone = 'Asia/Kolkata'`, `SELECT pg_reload_conf()`} {
		dstPG.Exec(ctx, s)
	}
	psrc, pdst := pinnedPool(t, ctx, srcPG.DSNApp()), pinnedPool(t, ctx, dstPG.DSNApp())
	mustExec(t, ctx, psrc, `
		INSERT INTO vals SELECT tn, g, date '2024-02-01' + g, timestamp '2024-03-04 05:06:07.123456' + g * interval '1 day 1 hour',
			timestamptz '2024-03-04 05:06:07.123456+00' + g * interval '7 hours', interval '1 year 2 mons -3 days 04:05:06.789' * g,
			0.1::float8 * g / 3, (0.1::float8 * g / 7)::real,
			CASE WHEN g <= 4 THEN (SELECT array_agg(1.0::float8 / (i + g)) FROM generate_series(1, 1500) i) END
		FROM generate_series(1, 30) g, unnest(ARRAY[5, 10, 12, 25]) tn;
		INSERT INTO vals_text SELECT tn, g, ARRAY['sad', 'happy']::mood[], date '2024-02-01' + g, timestamp '2024-03-04 05:06:07.5' + g * interval '1 hour',
			interval '-1 days +02:03:04.5' * g, 1.0::float8 / (g + 2)
		FROM generate_series(1, 30) g, unnest(ARRAY[5, 10, 12, 25]) tn;`)
	var toasted bool
	if err := psrc.QueryRow(ctx, `SELECT pg_column_size(fa) < octet_length(fa::text) / 2 FROM vals WHERE tenant_id = 5 AND id = 1`).Scan(&toasted); err != nil || !toasted {
		t.Fatalf("fa not stored out of line / compressed: %v", err)
	}
	rng := catalog.NewRange(10, 20)
	m := startMover(t, ctx, moveConfig(t, "styles", srcPG, dstPG, []string{"vals", "vals_text"}, rng), newMemJournal())
	defer m.Stop(ctx)
	for _, q := range []string{
		`UPDATE vals SET d = d + 1, ts = ts + interval '1 day 2 hours', tz = tz - interval '5 hours', iv = iv * 2 - interval '7 days', f = f / 7, r = r * 3 WHERE tenant_id = 10`,
		`INSERT INTO vals (tenant_id, id, d, ts, tz, iv, f, r) VALUES (12, 100, '2023-11-12', '2023-11-12 13:14:15.25', '2023-11-12 13:14:15.25+02', '-1 year +2 days -03:04:05', 1.0/3, 2.0/3)`,
		`UPDATE vals SET tenant_id = 11 WHERE tenant_id = 5 AND id <= 3`, // enters the range: fa is read from the source
		`UPDATE vals_text SET d = d + 40, iv = iv - interval '1 mon', f = f * 1.1 WHERE tenant_id = 12`,
		`INSERT INTO vals_text VALUES (10, 100, '{ok}', '2024-12-01', '2024-12-01 23:59:59.999999', '3 days 04:00:00', 2.0/7)`,
	} {
		mustExec(t, ctx, src, q)
	}
	waitCaughtUp(t, ctx, m, src)
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	assertSame(t, ctx, psrc, pdst, []string{"vals", "vals_text"}, rng)
}
