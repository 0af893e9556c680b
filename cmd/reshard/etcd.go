package main

import (
	"context"
	"os"
	"strings"

	"github.com/reshard/reshard/catalog"
)

// etcdConnConfig builds the etcd connection from the global flags. --etcd-user is
// user[:password]; without a password there, RESHARD_ETCD_PASSWORD supplies it (so it
// stays out of the process list and shell history).
func etcdConnConfig() catalog.ConnConfig {
	user, pass, _ := strings.Cut(globals.etcdUser, ":")
	if user != "" && pass == "" {
		pass = os.Getenv("RESHARD_ETCD_PASSWORD")
	}
	return catalog.ConnConfig{
		Endpoints: strings.Split(globals.etcd, ","),
		CACert:    globals.etcdCA,
		Cert:      globals.etcdCert,
		Key:       globals.etcdKey,
		User:      user,
		Password:  pass,
	}
}

// openStore connects to etcd (a failure says "etcd unreachable at <endpoints>: ...") and
// returns the catalog store of --cluster with its close function.
func openStore(ctx context.Context) (*catalog.Store, func(), error) {
	return openStoreFor(ctx, globals.cluster)
}

// openStoreFor is openStore for a given cluster (init takes it from cluster.yaml).
func openStoreFor(ctx context.Context, cluster string) (*catalog.Store, func(), error) {
	s, err := catalog.Open(ctx, etcdConnConfig(), cluster)
	if err != nil {
		return nil, nil, err
	}
	return s, func() { _ = s.Close() }, nil
}

// withStore is openStore for a command's body: the store is closed however fn returns.
func withStore(ctx context.Context, fn func(store *catalog.Store) error) error {
	store, closeStore, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	return fn(store)
}

// withCatalog is withStore for the commands that work on the catalog as it is: a cluster
// without one fails with the catalog's own error before fn touches anything.
func withCatalog(ctx context.Context, fn func(store *catalog.Store, st *catalog.State) error) error {
	return withStore(ctx, func(store *catalog.Store) error {
		st, err := store.Load(ctx)
		if err != nil {
			return err
		}
		return fn(store, st)
	})
}
