package main

import (
	"context"
	"testing"
	"time"
)

// testContext is the context of a test's CLI runs and checks, bounded by d so that a shard
// or etcd that stops answering fails the test instead of hanging it. It ends when the test
// function returns, before the test's cleanups run, as a deferred cancel would.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
