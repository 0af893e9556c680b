package pgmeta

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
)

// TestConnectMasksPassword: a failed connection shows the DSN, its password masked, in
// either DSN form.
func TestConnectMasksPassword(t *testing.T) {
	port := closedPort(t)
	ctx := context.Background()
	for _, dsn := range []string{
		fmt.Sprintf("host=127.0.0.1 port=%d user=app password=hunter2 dbname=app connect_timeout=2", port),
		fmt.Sprintf("postgres://app:hunter2@127.0.0.1:%d/app?connect_timeout=2", port),
		"host=127.0.0.1 port=notaport password=hunter2",
	} {
		_, err := Connect(ctx, dsn)
		if err == nil {
			t.Fatalf("Connect(%s) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("password in error: %v", err)
		}
		if !strings.Contains(err.Error(), "****") {
			t.Errorf("error does not show the masked DSN: %v", err)
		}
	}
}

// closedPort is a local port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// closedPortDSN is the DSN of a server that does not answer, with a password that must
// never show.
func closedPortDSN(t *testing.T) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=app password=hunter2 dbname=app connect_timeout=2", closedPort(t))
}
