package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrinterWritesJSONOrText: the json printer writes the value (indented, one trailing
// newline) and never the text; the text printer writes only the text.
func TestPrinterWritesJSONOrText(t *testing.T) {
	v := map[string]any{"shard": "s1", "rows": 3}
	text := func(w *bytes.Buffer) func() error {
		return func() error { _, err := w.WriteString("s1 has 3 rows\n"); return err }
	}
	tests := []struct {
		format, want string
	}{
		{"json", "{\n  \"rows\": 3,\n  \"shard\": \"s1\"\n}\n"},
		{"text", "s1 has 3 rows\n"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			p, err := newPrinter(tt.format)
			if err != nil {
				t.Fatal(err)
			}
			var w bytes.Buffer
			if err := p.print(&w, v, text(&w)); err != nil {
				t.Fatal(err)
			}
			if w.String() != tt.want {
				t.Errorf("printed %q, want %q", w.String(), tt.want)
			}
			if p.isJSON() != (tt.format == "json") {
				t.Errorf("isJSON() = %v for -o %s", p.isJSON(), tt.format)
			}
		})
	}
	wantErr := errors.New("disk full")
	p, _ := newPrinter("text")
	if err := p.print(&bytes.Buffer{}, v, func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("the text's error is lost: %v", err)
	}
}

// TestUnknownOutputFormatIsRefusedBeforeAnything: -o is checked once, before any command
// runs: a typo exits 1 with one line naming the choices, and no command reaches etcd
// (which here does not answer: a command that ran would say so instead).
func TestUnknownOutputFormatIsRefusedBeforeAnything(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"catalog", "show"},
		{"status"},
		{"shard", "list"},
		{"plan"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			res := runCLI(t, ctx, append([]string{"--etcd", fmt.Sprintf("127.0.0.1:%d", closedPort(t)), "-o", "yaml"}, args...)...)
			want := `reshard: -o "yaml": use text or json` + "\n"
			if res.code != 1 || res.stderr != want || res.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", res.code, res.stdout, res.stderr, want)
			}
		})
	}
}

// TestIsTerminalOnlyForTerminals: progress and chatter go only to a terminal: not to a
// buffer, a file, or /dev/null (a character device, but no terminal).
func TestIsTerminalOnlyForTerminals(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for name, w := range map[string]interface{ Write([]byte) (int, error) }{"buffer": &bytes.Buffer{}, "file": f, "/dev/null": null} {
		if isTerminal(w) {
			t.Errorf("%s is taken for a terminal", name)
		}
	}
}
