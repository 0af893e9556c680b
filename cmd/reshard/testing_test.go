package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
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
		errb.WriteString("reshard: " + err.Error() + "\n")
		res.code = 1
	}
	res.stderr = errb.String()
	return res
}
