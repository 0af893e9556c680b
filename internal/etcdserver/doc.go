// Package etcdserver runs etcd in-process with go.etcd.io/etcd/server/v3/embed, on free
// loopback ports: a single member (Start), or a replicated cluster of n members (StartCluster)
// whose members tests kill hard and restart to play a leader failure. Tests use it directly;
// `reshard dev up` runs a single member inside a detached `reshard dev etcd` process.
// Everything else reaches it through the real etcd client, exactly as it would a production
// cluster.
package etcdserver
