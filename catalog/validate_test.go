package catalog

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateRanges(t *testing.T) {
	shards := map[string]Shard{"s1": {Name: "s1"}, "s2": {Name: "s2"}}
	tests := []struct {
		name   string
		ranges []Range
		want   []string // substrings of the error; empty means valid
	}{
		{"one range", []Range{{Range: Full, Shard: "s1"}}, nil},
		{"two ranges", []Range{{Range: Below(10), Shard: "s1"}, {Range: From(10), Shard: "s2"}}, nil},
		{"unsorted input", []Range{{Range: From(10), Shard: "s2"}, {Range: Below(10), Shard: "s1"}}, nil},
		{"none", nil, []string{"no ranges"}},
		{"gap", []Range{{Range: Below(10), Shard: "s1"}, {Range: From(20), Shard: "s2"}}, []string{"gap between :10 and 20:", "10..19"}},
		{"overlap", []Range{{Range: Below(20), Shard: "s1"}, {Range: From(10), Shard: "s2"}}, []string{"overlap"}},
		{"low gap", []Range{{Range: From(0), Shard: "s1"}}, []string{"gap below 0"}},
		{"high gap", []Range{{Range: Below(0), Shard: "s1"}}, []string{"gap above 0"}},
		{"unknown shard", []Range{{Range: Full, Shard: "s9"}}, []string{`unknown shard "s9"`}},
		{"all at once", []Range{{Range: NewRange(0, 5), Shard: "s9"}}, []string{"gap below", "gap above", "unknown shard"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateRanges(tt.ranges, shards)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestEvenRanges(t *testing.T) {
	for n := 1; n <= 7; n++ {
		names := make([]string, n)
		shards := map[string]Shard{}
		for i := range names {
			names[i] = "s" + string(rune('a'+i))
			shards[names[i]] = Shard{Name: names[i]}
		}
		rs := EvenRanges(names)
		if err := ValidateRanges(rs, shards); err != nil {
			t.Errorf("EvenRanges(%d) invalid: %v", n, err)
		}
	}
}

func TestValidateShardPassword(t *testing.T) {
	tests := []struct {
		dsn     string
		wantErr bool
	}{
		{"host=h user=u dbname=d", false},
		{"host=h user=u password=secret dbname=d", true},
		{"host=h password = 'se cret' dbname=d", true},
		{"postgres://u:secret@h/d", true},
		{"postgres://u@h/d?password=secret", true},
		{"postgres://u@h/d", false},
	}
	for _, tt := range tests {
		err := ValidateShard(Shard{Name: "s1", DSN: tt.dsn})
		if (err != nil) != tt.wantErr {
			t.Errorf("ValidateShard(%q) = %v, wantErr %v", tt.dsn, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
		if m := MaskDSN(tt.dsn); strings.Contains(m, "secret") || strings.Contains(m, "cret") {
			t.Errorf("MaskDSN(%q) = %q leaks the password", tt.dsn, m)
		}
	}
}

func TestValidateConfig(t *testing.T) {
	ok := Config{Cluster: "demo", Key: "tenant_id", Tables: []string{"orders"},
		Partitions: []PartitionSpec{{Table: "events", Column: "created_at", Interval: "day", Premake: 7, Retention: "30d"}}}
	if err := ValidateConfig(ok); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	bad := Config{Cluster: "Demo!", Key: "", Tables: []string{"a", "a"},
		Partitions: []PartitionSpec{{Table: "events", Column: "c", Interval: "hour", Retention: "30x"}}}
	err := ValidateConfig(bad)
	for _, w := range []string{"cluster name", "key column", "listed twice", "interval", "retention"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
}

func TestValidateConfigKeyspace(t *testing.T) {
	base := func(mod func(*Config)) Config {
		c := Config{Cluster: "k", Key: "company_id", Tables: []string{"companies", "Billing.Invoices", `app."Line.Items"`}}
		mod(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want string // "" valid
	}{
		{"qualified and quoted names", base(func(c *Config) {}), ""},
		{"hash on uuid", base(func(c *Config) { c.KeyType, c.Distribution = KeyUUID, DistHash }), ""},
		{"own key column", base(func(c *Config) { c.TableKeys = map[string]string{"companies": "id"} }), ""},
		{"range on uuid", base(func(c *Config) { c.KeyType = KeyUUID }), "distribution range needs an integer key, and the key is uuid: set distribution: hash"},
		{"range on text", base(func(c *Config) { c.KeyType, c.Distribution = KeyText, DistRange }), "distribution range needs an integer key"},
		{"unknown distribution", base(func(c *Config) { c.Distribution = "modulo" }), `distribution "modulo"`},
		{"key of an unlisted table", base(func(c *Config) { c.TableKeys = map[string]string{"ads": "company_id"} }), `table "ads": the table is not in tables:`},
		{"three-part name", base(func(c *Config) { c.Tables = append(c.Tables, "a.b.c") }), "want table or schema.table"},
		{"unsupported key type", base(func(c *Config) { c.KeyType = "numeric" }), "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateConfig(tt.cfg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}
