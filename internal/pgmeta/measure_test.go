package pgmeta

import (
	"context"
	"testing"

	"github.com/reshard/reshard/catalog"
)

// TestMeasure: tables and tenants are sized (partitions summed, tenants adding up to their
// tables), and a large table from a flagged sample.
func TestMeasure(t *testing.T) {
	// Tenant 1 is big, 2..50 small; events spread over both partitions.
	_, conn := shardWith(t, schema+`
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(1, 50) g;
INSERT INTO orders SELECT 1, g, repeat('x', 200) FROM generate_series(1, 20000) g;
INSERT INTO orders SELECT 1 + g % 49 + 1, g, 'small' FROM generate_series(1, 2000) g;
INSERT INTO events SELECT 1 + g % 50, g, CASE WHEN g % 2 = 0 THEN date '2025-01-01' ELSE date '2035-01-01' END FROM generate_series(1, 5000) g;
ANALYZE;`)
	ctx := context.Background()
	tables := []string{"tenants", "orders", "events"}
	sz, err := Measure(ctx, conn, catalog.RangeOn("tenant_id"), tables, MeasureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sz.Tables["orders"].Rows != 22000 || sz.Tables["events"].Rows != 5000 || sz.Tables["tenants"].Rows != 50 {
		t.Errorf("rows: %+v", sz.Tables)
	}
	if sz.Tables["events"].Bytes == 0 {
		t.Error("partitioned table has no bytes: partitions not summed")
	}
	var tableBytes, tenantBytes, tenantRows int64
	for _, ts := range sz.Tables {
		tableBytes += ts.Bytes
	}
	for _, ts := range sz.Tenants {
		tenantBytes += ts.Bytes
		tenantRows += ts.Rows
	}
	if diff := tableBytes - tenantBytes; diff < -100 || diff > 100 {
		t.Errorf("tenants add up to %d bytes, tables to %d", tenantBytes, tableBytes)
	}
	if tenantRows != 27050 || len(sz.Tenants) != 50 {
		t.Errorf("tenant rows %d over %d tenants", tenantRows, len(sz.Tenants))
	}
	if sz.Tenants[1].Bytes < 10*sz.Tenants[2].Bytes {
		t.Errorf("tenant 1 (%d bytes) should dwarf tenant 2 (%d)", sz.Tenants[1].Bytes, sz.Tenants[2].Bytes)
	}
	// Sampled: estimates, flagged.
	sampled, err := Measure(ctx, conn, catalog.RangeOn("tenant_id"), []string{"orders"}, MeasureOptions{SampleAboveRows: 1000, SampleRows: 11000})
	if err != nil {
		t.Fatal(err)
	}
	so := sampled.Tables["orders"]
	if !so.Sampled || so.Rows < 5000 || so.Rows > 60000 {
		t.Errorf("sampled orders: %+v (true rows 22000)", so)
	}
}

// TestMeasureNamesHashedTenants: under hash distribution a tenant is counted at its hash and
// named by its key as text (what stats collect shows for a hot tenant); under range it is
// counted at its key and not named.
func TestMeasureNamesHashedTenants(t *testing.T) {
	const big, small = "3f2c1a0b-9c8d-4e8a-9c7b-3d2f1a0b9c8d", "0e1b4c3a-5f2d-4e8a-9c7b-3d2f1a0b9c8d"
	_, conn := shardWith(t, `
CREATE TABLE orgs (org_id uuid NOT NULL, n bigint NOT NULL, PRIMARY KEY (org_id, n));
CREATE TABLE plain (tenant_id bigint NOT NULL, n bigint NOT NULL, PRIMARY KEY (tenant_id, n));
INSERT INTO orgs SELECT '`+big+`', g FROM generate_series(1, 300) g;
INSERT INTO orgs SELECT '`+small+`', g FROM generate_series(1, 3) g;
INSERT INTO plain SELECT 7, g FROM generate_series(1, 5) g;`)
	ctx := context.Background()
	pos := func(s string) int64 {
		k, err := catalog.ParseKey(catalog.KeyUUID, s)
		if err != nil {
			t.Fatal(err)
		}
		return catalog.HashKey(k)
	}
	for _, tc := range []struct {
		name  string
		keys  catalog.Keyspace
		table string
		want  map[int64]TenantSize // bytes not compared
	}{
		{"hash uuid", catalog.Keyspace{Key: "org_id", Type: catalog.KeyUUID, Distribution: catalog.DistHash}, "orgs",
			map[int64]TenantSize{pos(big): {Tenant: big, Rows: 300}, pos(small): {Tenant: small, Rows: 3}}},
		{"range bigint", catalog.RangeOn("tenant_id"), "plain", map[int64]TenantSize{7: {Rows: 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sz, err := Measure(ctx, conn, tc.keys, []string{tc.table}, MeasureOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, ts := range sz.Tenants {
				ts.Bytes = 0
				if ts != tc.want[k] {
					t.Errorf("tenant at %d: %+v, want %+v", k, ts, tc.want[k])
				}
			}
			if len(sz.Tenants) != len(tc.want) {
				t.Errorf("%d tenants, want %d: %+v", len(sz.Tenants), len(tc.want), sz.Tenants)
			}
		})
	}
}
