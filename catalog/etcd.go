package catalog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type mvccKV = mvccpb.KeyValue

// ConnConfig says how to reach etcd. Empty TLS files mean plain TCP; User with Password
// turns on etcd authentication.
type ConnConfig struct {
	Endpoints   []string
	CACert      string // CA bundle that signed etcd's server certificate
	Cert, Key   string // client certificate and key (mutual TLS)
	User        string
	Password    string
	DialTimeout time.Duration // default 5s; also bounds the first request
}

// Open connects to etcd, checks it answers (one read of the cluster's config key), and
// returns a Store that owns the client: Close it. A failure names the endpoints tried.
func Open(ctx context.Context, cc ConnConfig, cluster string, opts ...Option) (*Store, error) {
	if !ValidName(cluster) {
		return nil, fmt.Errorf("cluster name %q: use lower-case letters, digits and _ (at most 48), starting with a letter", cluster)
	}
	var eps []string
	for _, e := range cc.Endpoints {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("no etcd endpoint: pass --etcd host:port (or set RESHARD_ETCD)")
	}
	if cc.DialTimeout <= 0 {
		cc.DialTimeout = 5 * time.Second
	}
	cfg := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: cc.DialTimeout,
		Username:    cc.User,
		Password:    cc.Password,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
	}
	if cc.CACert != "" || cc.Cert != "" || cc.Key != "" {
		if (cc.Cert == "") != (cc.Key == "") {
			return nil, fmt.Errorf("etcd TLS: give both --etcd-cert and --etcd-key, or neither")
		}
		for _, f := range []string{cc.CACert, cc.Cert, cc.Key} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("etcd TLS: cannot read %s: %w", f, err)
			}
		}
		ti := transport.TLSInfo{CertFile: cc.Cert, KeyFile: cc.Key, TrustedCAFile: cc.CACert}
		tc, err := ti.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w (check --etcd-cacert, --etcd-cert and --etcd-key)", err)
		}
		cfg.TLS = tc
	}
	where := strings.Join(eps, ",")
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, connectError(ctx, where, cc.User, err)
	}
	s, err := NewStore(cli, cluster, opts...)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.closeFn = cli.Close
	// The client dials lazily: one real request is what tells whether etcd is there.
	pctx, cancel := context.WithTimeout(ctx, cc.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, s.key(keyConfig), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, connectError(ctx, where, cc.User, err)
	}
	return s, nil
}

// connectError says why the first contact with etcd failed: refused credentials, or
// unreachable (with the endpoints tried).
func connectError(ctx context.Context, where, user string, err error) error {
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrInvalidAuthToken),
		errors.Is(err, rpctypes.ErrAuthNotEnabled):
		return fmt.Errorf("etcd at %s refused user %q: %w (check --etcd-user and RESHARD_ETCD_PASSWORD)", where, user, err)
	}
	return fmt.Errorf("etcd unreachable at %s: %w (check --etcd / RESHARD_ETCD and that etcd runs)", where, err)
}

// processStart is when this process started, as near as it can tell: with host and pid it
// names a driver unambiguously (a pid is reused, a start time with it is not).
var processStart = time.Now()

// defaultHolder describes this process in locks and elections: host, pid and start.
func defaultHolder() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "unknown-host"
	}
	return fmt.Sprintf("%s pid %d started %s", h, os.Getpid(), processStart.UTC().Format(time.RFC3339))
}
