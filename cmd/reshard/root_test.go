package main

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestRootListsEveryCommand: the root command carries every command once, the documented
// ones and the hidden dev etcd under dev, whatever order files are compiled in.
func TestRootListsEveryCommand(t *testing.T) {
	want := []string{"apply", "cancel", "catalog", "cleanup", "dev", "init", "move", "partitions", "plan", "resolve",
		"schedule", "shard", "split", "stats", "status", "ui", "verify"}
	var got []string
	for _, c := range newRootCmd().Commands() {
		got = append(got, c.Name())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("commands %v, want %v", got, want)
	}
	dev, _, err := newRootCmd().Find([]string{"dev", "etcd"})
	if err != nil || dev.Name() != "etcd" || !dev.Hidden {
		t.Errorf("dev etcd: %v, %v", dev, err)
	}
}

// TestCompletionScripts: `reshard completion bash|zsh|fish` prints a script for that shell
// (README, Shell completion), without reaching etcd.
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef reshard", "fish": "fish completion"} {
		res := runCLI(t, context.Background(), "--etcd", "127.0.0.1:1", "completion", shell)
		if res.code != 0 || !strings.Contains(res.stdout, want) {
			t.Errorf("completion %s: exit %d, stdout starts %.80q, stderr %s", shell, res.code, res.stdout, res.stderr)
		}
	}
}
