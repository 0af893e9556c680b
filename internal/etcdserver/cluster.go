package etcdserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a replicated etcd: n embedded members in this process, each with its own data
// directory and loopback ports, talking raft to each other over real TCP. Tests use it to
// kill (stop hard) and restart members, the leader especially, under a real client.
//
// A kill is what a crash looks like from outside: every client connection to the member is
// cut at once (clients reach each member through a small TCP relay on its client port,
// which the kill closes with all its connections; etcd's own shutdown would instead wait
// up to its request timeout for open streams), and its raft loop stops without handing the
// leadership over (a clean Close would transfer it first), so the other members notice
// only through missed heartbeats and hold an election. Its data directory is kept: Restart
// brings it back on the same ports with what it had written, and it catches up from the
// leader.
type Cluster struct {
	token  string
	logger *zap.Logger

	mu      sync.Mutex
	members []*member
}

type member struct {
	name         string
	dir          string
	cport, pport int         // the client port (the relay's) and the peer port
	iport        int         // the member's own client port, behind the relay
	relay        *relay      // nil while killed
	e            *embed.Etcd // nil while killed
}

// StartCluster starts n members with their data under dir and waits until every one
// serves (a leader is elected and each has joined).
func StartCluster(ctx context.Context, dir string, n int, opts Options) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("etcd cluster of %d members: give at least 1", n)
	}
	ports, err := freePorts(3 * n)
	if err != nil {
		return nil, err
	}
	var tok [6]byte
	_, _ = rand.Read(tok[:])
	c := &Cluster{token: "reshard-" + hex.EncodeToString(tok[:]), logger: opts.Logger}
	for i := range n {
		c.members = append(c.members, &member{name: fmt.Sprintf("m%d", i), dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			cport: ports[3*i], pport: ports[3*i+1], iport: ports[3*i+2]})
	}
	// Every member must be starting before any can be ready: a new cluster needs a quorum
	// to elect its first leader.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.start(ctx, i)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) initialCluster() string {
	parts := make([]string, len(c.members))
	for i, m := range c.members {
		parts[i] = fmt.Sprintf("%s=http://127.0.0.1:%d", m.name, m.pport)
	}
	return strings.Join(parts, ",")
}

// start runs member i (first start or restart: with a data dir, etcd ignores the initial
// cluster and resumes from its WAL) and waits until it serves.
func (c *Cluster) start(ctx context.Context, i int) error {
	m := c.members[i]
	cfg := memberConfig(m.name, m.dir, m.iport, m.pport, c.logger)
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", m.cport))
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.InitialCluster = c.initialCluster()
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = embed.ClusterStateFlagNew
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd member %s: start in %s: %w", m.name, m.dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		hardClose(e)
		return fmt.Errorf("etcd member %s: stopped while starting: %w", m.name, err)
	case <-ctx.Done():
		hardClose(e)
		return fmt.Errorf("etcd member %s: %w", m.name, ctx.Err())
	case <-time.After(60 * time.Second):
		hardClose(e)
		return fmt.Errorf("etcd member %s: not ready after 60s in %s", m.name, m.dir)
	}
	r, err := startRelay(fmt.Sprintf("127.0.0.1:%d", m.cport), fmt.Sprintf("127.0.0.1:%d", m.iport))
	if err != nil {
		hardClose(e)
		return fmt.Errorf("etcd member %s: %w", m.name, err)
	}
	c.mu.Lock()
	m.e, m.relay = e, r
	c.mu.Unlock()
	return nil
}

// hardClose stops a member without a leadership transfer: raft stops first, so Close's
// transfer attempt finds the server already stopped and gives up at once.
func hardClose(e *embed.Etcd) {
	e.Server.HardStop()
	e.Close()
}

// Size is the number of members, running or killed.
func (c *Cluster) Size() int { return len(c.members) }

// Endpoints are the client endpoints (host:port) of every member, running or not, as a
// client of a production cluster lists them.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i := range c.members {
		out[i] = c.Endpoint(i)
	}
	return out
}

// Endpoint is the client endpoint of member i.
func (c *Cluster) Endpoint(i int) string { return fmt.Sprintf("127.0.0.1:%d", c.members[i].cport) }

// Running reports whether member i is up (not killed).
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].e != nil
}

// Kill stops member i hard (see Cluster). Killing a killed member does nothing.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	m := c.members[i]
	e, r := m.e, m.relay
	m.e, m.relay = nil, nil
	c.mu.Unlock()
	if r != nil {
		r.close()
	}
	if e != nil {
		hardClose(e)
	}
}

// Restart starts killed member i again on its data directory and ports and waits until it
// serves. Restarting a running member does nothing.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if c.Running(i) {
		return nil
	}
	var err error
	// The kernel may hold the old ports for a moment after the listeners closed.
	for attempt := 0; attempt < 20; attempt++ {
		if err = c.start(ctx, i); err == nil || ctx.Err() != nil || !isAddrInUse(err) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

func isAddrInUse(err error) bool { return strings.Contains(err.Error(), "address already in use") }

// Leader waits until the running members agree on a leader that is itself running, and
// returns its index. A quorum of running members must report it: a member that has just
// lost contact may still name the old leader for a moment.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for {
		if i, ok := c.agreedLeader(); ok {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcd cluster: no leader agreed by a quorum of members: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) agreedLeader() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	votes := map[uint64]int{}
	for _, m := range c.members {
		if m.e != nil {
			votes[m.e.Server.Lead()]++
		}
	}
	for i, m := range c.members {
		if m.e == nil {
			continue
		}
		id := uint64(m.e.Server.MemberID())
		if m.e.Server.Lead() == id && votes[id] > len(c.members)/2 {
			return i, true
		}
	}
	return -1, false
}

// Close stops every running member (hard: a clean stop of each in turn would hand the
// leadership around first). Data directories are left to the caller.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Kill(i)
		}()
	}
	wg.Wait()
}

// freePorts returns n distinct free loopback ports: all are held open until every one is
// picked, so none is handed out twice.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcd: find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
