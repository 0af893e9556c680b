package main

import (
	"context"
	"strings"
	"testing"

	"github.com/reshard/reshard/internal/testenv"
)

// TestEtcdAuthFlags: --etcd-user user[:password] and RESHARD_ETCD_PASSWORD against an etcd
// with auth on; a refusal names the user, never the password.
func TestEtcdAuthFlags(t *testing.T) {
	srv, ecli := testenv.Etcd(t)
	ctx := context.Background()
	if _, err := ecli.UserAdd(ctx, "root", "rootpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := ecli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := ecli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	ep := []string{"--etcd", srv.Endpoint(), "--cluster", "demo"}
	res := runCLI(t, ctx, append(ep, "--etcd-user", "root:wrong", "catalog", "show")...)
	if res.code != 1 || !strings.Contains(res.stderr, `refused user "root"`) || strings.Contains(res.stderr, "wrong") {
		t.Errorf("wrong password: %d %s", res.code, res.stderr)
	}
	res = runCLI(t, ctx, append(ep, "--etcd-user", "root:rootpw", "catalog", "show")...)
	if res.code != 1 || !strings.Contains(res.stderr, "no catalog for cluster") {
		t.Errorf("right password: %d %s", res.code, res.stderr)
	}
	t.Setenv("RESHARD_ETCD_PASSWORD", "rootpw")
	res = runCLI(t, ctx, append(ep, "--etcd-user", "root", "catalog", "show")...)
	if res.code != 1 || !strings.Contains(res.stderr, "no catalog for cluster") {
		t.Errorf("password from the environment: %d %s", res.code, res.stderr)
	}
}
