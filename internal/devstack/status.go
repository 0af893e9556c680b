package devstack

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reshard/reshard/internal/pgcluster"
)

// StatusReport is what a stack runs, as `reshard dev status` shows it. Its fields are in
// the order of their JSON names, as -o json always printed them.
type StatusReport struct {
	Cluster string        `json:"cluster"`
	Dir     string        `json:"dir"`
	Etcd    EtcdStatus    `json:"etcd"`
	Ready   bool          `json:"ready"`
	Shards  []ShardStatus `json:"shards"`
	Up      bool          `json:"up"` // every shard and etcd run and answer
	Created time.Time     `json:"-"`
}

// EtcdStatus is the stack's etcd: running is the process, error what a read through the
// client said.
type EtcdStatus struct {
	Endpoint string `json:"endpoint"`
	Error    string `json:"error"`
	PID      int    `json:"pid"`
	Running  bool   `json:"running"`
}

// ShardStatus is one cluster of the stack, with its tenants and its database's size.
type ShardStatus struct {
	Shard
	Running bool   `json:"running"`
	Tenants int64  `json:"tenants"`
	Bytes   int64  `json:"bytes"`
	Error   string `json:"error,omitempty"`
}

// Status looks at every part of the stack at --dir dirFlag. The error is for a stack that
// cannot be read; one that is not fully up has Up false, and Err says what to do.
func Status(ctx context.Context, dirFlag string) (*StatusReport, error) {
	st, dir, err := stateOf(dirFlag)
	if err != nil {
		return nil, err
	}
	rep := &StatusReport{Dir: dir, Cluster: st.Cluster, Ready: st.Ready, Created: st.Created, Shards: make([]ShardStatus, len(st.Shards))}
	_ = forEachShard(st.Shards, func(s Shard) error {
		rep.Shards[st.ShardIndex(s.Name)] = shardStatus(ctx, s)
		return nil
	})
	rep.Etcd = EtcdStatus{Endpoint: st.Etcd.Endpoint, PID: st.Etcd.PID, Running: isStackEtcd(st.Etcd.PID, st.Etcd.Dir)}
	if rep.Etcd.Running {
		if err := probeEtcd(ctx, st.Etcd.Endpoint, 2*time.Second); err != nil {
			rep.Etcd.Error = err.Error()
		}
	}
	rep.Up = rep.Etcd.Running && rep.Etcd.Error == ""
	for _, s := range rep.Shards {
		rep.Up = rep.Up && s.Running && s.Error == ""
	}
	return rep, nil
}

// Err says what to do about a stack that is not fully up; nil if it is.
func (r *StatusReport) Err(dirFlag string) error {
	if r.Up {
		return nil
	}
	return fmt.Errorf("the dev stack in %s is not fully up: run `reshard dev down --dir %s`, then `reshard dev up`", r.Dir, dirFlag)
}

func shardStatus(ctx context.Context, s Shard) ShardStatus {
	out := ShardStatus{Shard: s}
	if c, err := pgcluster.Open(s.Dir, s.Port); err == nil {
		out.Running = c.Running(ctx)
	}
	if !out.Running {
		return out
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.DSN)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(cctx, "SELECT (SELECT count(*) FROM tenants), pg_database_size(current_database())").Scan(&out.Tenants, &out.Bytes); err != nil {
		out.Error = err.Error()
	}
	return out
}
