// Package etcdserver runs a single-member etcd in-process with
// go.etcd.io/etcd/server/v3/embed, on free loopback ports. Tests use it directly; `reshard
// dev up` runs it inside a detached `reshard dev etcd` process. Everything else reaches
// it through the real etcd client, exactly as it would a production cluster.
package etcdserver
