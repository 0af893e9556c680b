package etcdserver_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reshard/reshard/internal/testenv"
)

// transient reports an error a client sees while the cluster elects a leader or a member
// goes away: the request may be retried (a plain put is then at-least-once, which this
// test allows for by giving every write its own key).
func transient(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && ee.Code() == codes.Unavailable {
		return true
	}
	return status.Code(err) == codes.Unavailable || errors.Is(err, context.DeadlineExceeded)
}

// retry runs op until it succeeds or fails with a non-transient error, for up to a minute.
func retry(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return
		}
		if !transient(err) || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterServesThroughLeaderKills: a 3-member cluster keeps taking writes and
// answering linearizable reads while its leader is killed and restarted again and again;
// every acknowledged write, including a background writer's, is readable afterwards, from
// every member once the killed ones are back.
func TestClusterServesThroughLeaderKills(t *testing.T) {
	c, cli := testenv.EtcdCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var mu sync.Mutex
	acked := map[string]string{}
	stop := testenv.Repeat(1, func(_, i int) bool { // a writer that never pauses for the kills
		k, v := fmt.Sprintf("/bg/%06d", i), fmt.Sprint(i)
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Put(wctx, k, v)
		wcancel()
		if err == nil {
			mu.Lock()
			acked[k] = v
			mu.Unlock()
		}
		return true
	})

	const rounds = 4
	for round := range rounds {
		lead, err := c.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.Kill(lead)
		newLead, err := c.Leader(ctx)
		if err != nil {
			t.Fatalf("round %d: after killing leader m%d: %v", round, lead, err)
		}
		if newLead == lead {
			t.Fatalf("round %d: killed member m%d is still reported leader", round, lead)
		}
		for j := range 10 {
			k, v := fmt.Sprintf("/fg/%d/%d", round, j), fmt.Sprintf("%d-%d", round, j)
			retry(t, "put "+k, func(ctx context.Context) error { _, err := cli.Put(ctx, k, v); return err })
			retry(t, "linearizable get "+k, func(ctx context.Context) error {
				resp, err := cli.Get(ctx, k)
				if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v) {
					t.Fatalf("round %d: linearizable read of %s right after its put = %v, want %q", round, k, resp.Kvs, v)
				}
				return err
			})
			mu.Lock()
			acked[k] = v
			mu.Unlock()
		}
		if err := c.Restart(ctx, lead); err != nil {
			t.Fatalf("round %d: restart m%d: %v", round, lead, err)
		}
		t.Logf("round %d: killed leader m%d, m%d took over, m%d restarted", round, lead, newLead, lead)
	}
	// A put in flight when its leader dies may hang until the server's request timeout
	// and fail (its outcome unknown): give the background writer time to get some through.
	bgAcked := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for k := range acked {
			if k[1] == 'b' {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(time.Minute); bgAcked() < 10 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	bg := bgAcked()
	if bg == 0 {
		t.Fatal("the background writer got no write acknowledged within a minute of the last kill")
	}

	mu.Lock()
	defer mu.Unlock()
	// Each member answers for itself (a client on its endpoint alone) and has everything.
	for i := range c.Size() {
		one, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Endpoint(i)}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		retry(t, fmt.Sprintf("read everything from m%d", i), func(ctx context.Context) error {
			got = map[string]string{}
			for _, pfx := range []string{"/bg/", "/fg/"} {
				resp, err := one.Get(ctx, pfx, clientv3.WithPrefix())
				if err != nil {
					return err
				}
				for _, kv := range resp.Kvs {
					got[string(kv.Key)] = string(kv.Value)
				}
			}
			return nil
		})
		one.Close()
		for k, v := range acked {
			if got[k] != v {
				t.Errorf("m%d: acknowledged %s=%q reads %q", i, k, v, got[k])
			}
		}
	}
	t.Logf("%d writes acknowledged (%d by the background writer), all present on every member", len(acked), bg)
}
