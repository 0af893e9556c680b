package main

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// keysSchema is the classic multi-tenant layout with uuid tenants: the tenant table keyed
// by id, its children by company_id with composite foreign keys, a table in a mixed-case
// schema, a reference table, a table keyed by text, one keyed by text under a
// nondeterministic collation, and an unsharded table that references a sharded one.
const keysSchema = `
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE companies (id uuid PRIMARY KEY, plan_id int REFERENCES plans (id), name text NOT NULL);
CREATE TABLE campaigns (company_id uuid NOT NULL REFERENCES companies (id), id bigint NOT NULL, PRIMARY KEY (company_id, id));
CREATE TABLE ads (company_id uuid NOT NULL, campaign_id bigint NOT NULL, id bigint NOT NULL, PRIMARY KEY (company_id, id),
  FOREIGN KEY (company_id, campaign_id) REFERENCES campaigns (company_id, id));
CREATE SCHEMA "Billing";
CREATE TABLE "Billing"."Invoices" (company_id uuid NOT NULL, id bigint NOT NULL, PRIMARY KEY (company_id, id));
CREATE TABLE slugs (slug text PRIMARY KEY);
CREATE TABLE ci_slugs (slug text COLLATE ci PRIMARY KEY);
CREATE TABLE audit (id bigint PRIMARY KEY, company_id uuid REFERENCES companies (id));
`

type keysFixture struct {
	f      *initFixture
	shards string
}

func newKeysFixture(t *testing.T) *keysFixture {
	pgs := testenv.Postgres(t, 2)
	srv, ecli := testenv.Etcd(t)
	ctx := context.Background()
	shards := ""
	for i, pg := range pgs {
		pg.Exec(ctx, keysSchema)
		shards += fmt.Sprintf("  - name: s%d\n    dsn: %q\n", i+1, pg.DSNApp())
	}
	return &keysFixture{f: &initFixture{ecli: ecli, etcd: []string{"--etcd", srv.Endpoint()}, dir: t.TempDir()}, shards: shards}
}

func (k *keysFixture) file(distribution, tables string) string {
	d := ""
	if distribution != "" {
		d = "distribution: " + distribution + "\n"
	}
	return "cluster: keys\nkey: company_id\n" + d + "tables:\n" + tables + "shards:\n" + k.shards
}

// TestInitRefusesBadKeyspaces: a {table, key} whose column does not exist, key columns of
// different types, range distribution on a uuid key, a text key under a nondeterministic
// collation, an unknown distribution and a malformed table entry are each one line on
// stderr (a problem on both shards is one line naming both), exit 1, nothing written.
func TestInitRefusesBadKeyspaces(t *testing.T) {
	k := newKeysFixture(t)
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"missing key column", k.file("hash", "  - {table: companies, key: id}\n  - {table: campaigns, key: nosuch}\n"),
			[]string{"shards s1, s2: table campaigns has no column nosuch"}},
		{"mixed key types", k.file("hash", "  - {table: companies, key: id}\n  - {table: slugs, key: slug}\n"),
			[]string{"shards s1, s2: table slugs: key column slug is text, not uuid", `ALTER TABLE "slugs" ALTER COLUMN "slug" TYPE uuid`}},
		{"range on a uuid key", k.file("", "  - {table: companies, key: id}\n  - campaigns\n"),
			[]string{"distribution range needs an integer key, and the key is uuid: set distribution: hash"}},
		{"nondeterministic collation", k.file("hash", "  - {table: ci_slugs, key: slug}\n"),
			[]string{"key column slug has the nondeterministic collation ci", `COLLATE "C"`}},
		{"unknown distribution", k.file("modulo", "  - {table: companies, key: id}\n"),
			[]string{`distribution "modulo": use range`}},
		{"malformed table entry", k.file("hash", "  - {table: companies, colum: id}\n"),
			[]string{"a table is a name or {table: NAME, key: COLUMN}", "colum"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := k.f.init(t, writeFile(t, k.f.dir, "bad.yaml", tc.yaml))
			if res.code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", res.code, res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res.stderr)
				}
			}
			if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n != 0 {
				t.Errorf("want one line, got %d:\n%s", n+1, res.stderr)
			}
			if n := keyCount(t, k.f.ecli, "/reshard/"); n != 0 {
				t.Fatalf("a refused init wrote %d keys", n)
			}
		})
	}
}

// TestInitWritesAKeyspaceOfUUIDKeys: the tenant table keyed by id, its children by
// company_id and a table of a mixed-case schema become a keyspace of uuid keys by hash
// (the key type read from the columns), stored parents first whatever order the file lists
// them in; init warns, once for both shards, about the
// unsharded table whose foreign key references a sharded one, and says why.
func TestInitWritesAKeyspaceOfUUIDKeys(t *testing.T) {
	k := newKeysFixture(t)
	file := writeFile(t, k.f.dir, "keys.yaml", k.file("hash", "  - ads\n  - campaigns\n  - Billing.Invoices\n  - {table: companies, key: id}\n"))
	res := k.f.init(t, file)
	if res.code != 0 {
		t.Fatalf("init: %d %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, "shards s1, s2: warning: table audit is not sharded but its foreign key audit_company_id_fkey references sharded table companies") ||
		strings.Count(res.stderr, "warning") != 1 {
		t.Errorf("want one warning about audit, got:\n%s", res.stderr)
	}
	resp, err := k.f.ecli.Get(context.Background(), "/reshard/keys/config")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("config: %v %v", resp, err)
	}
	var cfg catalog.Config
	if err := json.Unmarshal(resp.Kvs[0].Value, &cfg); err != nil {
		t.Fatal(err)
	}
	ks := cfg.Keyspace()
	if ks.KeyType() != catalog.KeyUUID || ks.Dist() != catalog.DistHash || ks.Column("companies") != "id" ||
		ks.Column("ads") != "company_id" || ks.Column("Billing.Invoices") != "company_id" {
		t.Errorf("keyspace %+v", ks)
	}
	if want := []string{"companies", "campaigns", "ads", "Billing.Invoices"}; !reflect.DeepEqual(cfg.Tables, want) {
		t.Errorf("tables %q, want parents first: %q", cfg.Tables, want)
	}
}
