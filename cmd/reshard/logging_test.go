package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/testenv"
)

// TestJSONLogsOfAMove: with --log-format json (at debug, so every line is written), every
// line a move writes to stderr parses as JSON and carries the migration's id, and none
// holds the shards' password, which comes in their DSNs from the environment; the same for
// a refused move to a shard that cannot be reached, whose error is the one line.
func TestJSONLogsOfAMove(t *testing.T) {
	const password = "Sekr3t-pw-15"
	env, pgs := moveFleetWith(t, "logs", func(name string, pg *testenv.PG) catalog.Shard {
		env := "RESHARD_TEST_" + strings.ToUpper(name) + "_DSN"
		t.Setenv(env, pg.DSNApp()+" password="+password)
		return catalog.Shard{Name: name, DSNEnv: env}
	})
	ctx := testContext(t, 4*time.Minute)
	t.Setenv("RESHARD_TEST_S3_DSN", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=app password=%s connect_timeout=2", closedPort(t), password))
	if err := env.store.AddShard(ctx, catalog.Shard{Name: "s4", DSNEnv: "RESHARD_TEST_S3_DSN", State: catalog.ShardActive}); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for name, pg := range pgs {
		before[name] = shardState(t, ctx, pg)
	}
	cases := []struct {
		id, rng, to string
		code        int
		msgs        []string // messages some line must have
	}{
		{"mlog", "1:50", "s2", 0, []string{"cutover", "flipped", "copy done"}},
		{"mbad", "60:70", "s4", 1, nil},
	}
	for _, tc := range cases {
		res := runCLI(t, ctx, "--etcd", env.etcd, "--cluster", "logs", "--log-format", "json", "--log-level", "debug",
			"move", "--id", tc.id, "--range", tc.rng, "--to", tc.to)
		if res.code != tc.code {
			t.Fatalf("move %s: exit %d, want %d\n%s%s", tc.id, res.code, tc.code, res.stdout, res.stderr)
		}
		lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
		msgs := map[string]bool{}
		for _, line := range lines {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("move %s: a line is not JSON (%v): %s", tc.id, err, line)
				continue
			}
			if rec["migration"] != tc.id {
				t.Errorf("move %s: a line lacks the migration id: %s", tc.id, line)
			}
			if strings.Contains(line, password) {
				t.Errorf("move %s: a line holds the password: %s", tc.id, line)
			}
			msgs[fmt.Sprint(rec["msg"])] = true
		}
		for _, want := range tc.msgs {
			if !msgs[want] {
				t.Errorf("move %s: no line says %q; messages: %v", tc.id, want, msgs)
			}
		}
		if tc.code != 0 && len(lines) != 1 {
			t.Errorf("refused move %s: %d lines, want its one error line:\n%s", tc.id, len(lines), res.stderr)
		}
		t.Logf("move %s: %d JSON lines", tc.id, len(lines))
	}
	checkMoved(t, ctx, before, pgs, 1, 50, "s1", "s2")
}

// TestBadLogFlagsAreOneLine: an unknown --log-level or --log-format ends any command with
// one line saying what to use, before it reaches etcd.
func TestBadLogFlagsAreOneLine(t *testing.T) {
	for _, tc := range []struct{ flag, value, want string }{
		{"--log-format", "xml", `--log-format "xml": use text or json`},
		{"--log-level", "loud", `--log-level "loud": use debug, info, warn or error`},
	} {
		res := runCLI(t, context.Background(), "--etcd", "127.0.0.1:1", tc.flag, tc.value, "status")
		if res.code != 1 || strings.TrimSpace(res.stderr) != "reshard: "+tc.want {
			t.Errorf("%s %s: exit %d, stderr %q", tc.flag, tc.value, res.code, res.stderr)
		}
	}
}
