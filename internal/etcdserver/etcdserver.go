package etcdserver

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Options tune the embedded server.
type Options struct {
	// ClientPort and PeerPort; 0 picks free ones.
	ClientPort, PeerPort int
	// Logger; nil keeps etcd quiet (errors only).
	Logger *zap.Logger
}

// Server is a running embedded etcd.
type Server struct {
	e         *embed.Etcd
	endpoint  string
	peerPort  int
	closeOnce sync.Once
}

// Start starts an etcd member with its data in dir and waits until it serves.
func Start(ctx context.Context, dir string, opts Options) (*Server, error) {
	cport, pport := opts.ClientPort, opts.PeerPort
	var err error
	if cport == 0 {
		if cport, err = freePort(); err != nil {
			return nil, err
		}
	}
	if pport == 0 {
		if pport, err = freePort(); err != nil {
			return nil, err
		}
	}
	for _, p := range []int{cport, pport} {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return nil, fmt.Errorf("etcd: port 127.0.0.1:%d is in use (pick another or stop what listens there): %w", p, err)
		}
		l.Close()
	}
	cfg := memberConfig("reshard", dir, cport, pport, opts.Logger)
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: start in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd: not ready after 30s in %s", dir)
	}
	return &Server{e: e, endpoint: fmt.Sprintf("127.0.0.1:%d", cport), peerPort: pport}, nil
}

// Endpoint is host:port of the client URL.
func (s *Server) Endpoint() string { return s.endpoint }

// PeerPort is the port of the peer URL (to restart the member on the same ports).
func (s *Server) PeerPort() int { return s.peerPort }

// Done is closed when the server stops by itself (fatal error).
func (s *Server) Done() <-chan error { return s.e.Err() }

// Close stops the server.
// A second Close does nothing (a test may stop the server before its cleanup does).
func (s *Server) Close() { s.closeOnce.Do(s.e.Close) }

// memberConfig is the embedded configuration of one member on loopback ports, quiet unless
// a logger is given. The caller sets the initial cluster.
func memberConfig(name, dir string, cport, pport int, logger *zap.Logger) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", cport))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", pport))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.LogLevel = "error"
	// Each authentication is a bcrypt compare inside this process; at the default cost it
	// takes seconds on a loaded two-core machine under the race detector, past a client's
	// dial timeout. These members serve tests and `reshard dev`, never real passwords.
	cfg.BcryptCost = uint(bcrypt.MinCost)
	if logger == nil {
		// etcd logs "server closed" at error level on every clean shutdown; keep it quiet.
		logger = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger)
	return cfg
}

func freePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}
