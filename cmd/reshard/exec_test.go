package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// TestSizeFlagsAcceptUnits: the size and rate flags of the commands that run moves take a
// byte count or a number with a unit, as durations take theirs.
func TestSizeFlagsAcceptUnits(t *testing.T) {
	var f execFlags
	cmd := &cobra.Command{}
	f.register(cmd)
	if err := cmd.ParseFlags([]string{"--max-cutover-lag", "1MiB", "--max-rate", "50MB", "--max-source-lag", "2GiB"}); err != nil {
		t.Fatal(err)
	}
	if f.maxCutoverLag != 1<<20 || f.maxRate != 50e6 || f.maxSourceLag != 2<<30 {
		t.Errorf("max-cutover-lag %d, max-rate %d, max-source-lag %d; want %d, %d, %d", f.maxCutoverLag, f.maxRate, f.maxSourceLag, 1<<20, int64(50e6), int64(2<<30))
	}
	var g execFlags
	g.register(&cobra.Command{})
	if g.maxCutoverLag != 1<<20 || g.maxSourceLag != 1<<30 || g.maxRate != 0 {
		t.Errorf("defaults: max-cutover-lag %d, max-source-lag %d, max-rate %d", g.maxCutoverLag, g.maxSourceLag, g.maxRate)
	}
}

// TestBadSizeFlagIsOneLine: a size flag that is not a size ends the command with one line
// naming the flag and what to write, before anything is read or written.
func TestBadSizeFlagIsOneLine(t *testing.T) {
	ctx := testContext(t, time.Minute)
	for _, args := range [][]string{
		{"move", "--range", "1:2", "--to", "s2", "--max-rate", "50XB"},
		{"apply", "plan.json", "--max-cutover-lag", "lots"},
		{"split", "--range", "1:9", "--at", "5", "--max-source-lag", "-1MiB"},
	} {
		res := runCLI(t, ctx, append([]string{"--etcd", "127.0.0.1:1"}, args...)...)
		if res.code != 1 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 ||
			!strings.Contains(res.stderr, "such as 50GiB or 500MB") || !strings.Contains(res.stderr, args[len(args)-2]) {
			t.Errorf("%v: exit %d, stderr:\n%s", args, res.code, res.stderr)
		}
	}
}
