package devstack

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunEtcdNeedsItsFlags: the hidden command refuses to start without its folder and
// ports (Up always gives them).
func TestRunEtcdNeedsItsFlags(t *testing.T) {
	if err := RunEtcd(context.Background(), io.Discard, "", 1, 2); err == nil || !strings.Contains(err.Error(), "needs --dir, --client-port and --peer-port") {
		t.Errorf("RunEtcd without a folder: %v", err)
	}
}

// TestLogTailShowsTheLastLines: an etcd that exits at start is explained by its log's last
// lines (or why the log cannot be read).
func TestLogTailShowsTheLastLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etcd.log")
	if err := os.WriteFile(p, []byte("a\nb\nc\nd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := logTail(p, 2); got != "c\nd" {
		t.Errorf("logTail = %q", got)
	}
	if got := logTail(p+".missing", 2); !strings.HasPrefix(got, "(") {
		t.Errorf("logTail of a missing log = %q", got)
	}
}
