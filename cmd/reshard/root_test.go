package main

import (
	"slices"
	"testing"
)

// TestRootListsEveryCommand: the root command carries every command once, the documented
// ones and the hidden dev etcd under dev, whatever order files are compiled in.
func TestRootListsEveryCommand(t *testing.T) {
	want := []string{"apply", "cancel", "catalog", "cleanup", "dev", "init", "move", "partitions", "plan",
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
