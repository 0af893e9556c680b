package main

import (
	"bytes"
	"testing"
)

// TestProgressOnlyOnATerminal: a move piped or redirected gets no progress callback, so
// nothing but its result reaches the file.
func TestProgressOnlyOnATerminal(t *testing.T) {
	if p := newProgress(&bytes.Buffer{}, "m1"); p != nil {
		t.Error("progress drawn into a buffer")
	}
}
