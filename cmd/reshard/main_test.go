package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// cliResult is what one in-process run of the CLI produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command line in-process like main's run, capturing output. Commands
// share the package's global flags, so tests that use it must not run in parallel.
func runCLI(t *testing.T, ctx context.Context, args ...string) cliResult {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(bytes.NewReader(nil))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	res := cliResult{stdout: out.String()}
	var ec exitCodeError
	switch {
	case err == nil:
	case errors.As(err, &ec):
		res.code = ec.code
	default:
		reportError(&errb, err)
		res.code = 1
	}
	res.stderr = errb.String()
	return res
}

// cliRunner runs the command line like runCLI, each time with the flags first (--etcd and
// --cluster, usually) that every call of a test passes.
func cliRunner(t *testing.T, ctx context.Context, first ...string) func(args ...string) cliResult {
	return func(args ...string) cliResult {
		t.Helper()
		return runCLI(t, ctx, append(slices.Clip(first), args...)...)
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// closedPort is a local port nothing listens on (an etcd or shard that does not answer).
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

// keyCount counts the etcd keys under prefix: a refused command must leave it unchanged.
func keyCount(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}
