package catalog

import (
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd refuses a request over its --max-request-bytes (default 1.5 MiB) or with more
// operations than its --max-txn-ops (default 128) before it proposes anything: the write
// failed whole, nothing of it applied.
var (
	ErrRequestTooLarge = errors.New("etcd refused the write: the request is larger than etcd's --max-request-bytes (default 1.5 MiB); nothing of it applied")
	ErrTooManyOps      = errors.New("etcd refused the write: more operations in one transaction than etcd's --max-txn-ops (default 128); nothing of it applied")
)

// defaultMaxTxnBytes leaves a third of etcd's default request limit (1.5 MiB) for what a
// batch carries besides its keys and values: compares, history events, protobuf framing.
const defaultMaxTxnBytes = 1 << 20

// opBytes is the size of the keys and values ops send.
func opBytes(ops []clientv3.Op) int {
	n := 0
	for _, op := range ops {
		n += len(op.KeyBytes()) + len(op.ValueBytes())
	}
	return n
}

// eventBytes is about what events add to a transaction: their keys and JSON.
func eventBytes(evs []Event) int {
	n := 0
	for _, ev := range evs {
		b, _ := json.Marshal(ev)
		n += len(b) + len(pfxHistory) + 64
	}
	return n
}

// fit is how many of ops, from the first, one transaction takes: at most maxOps and at
// most budget bytes, and at least one. One op bigger than the budget cannot be sent at all.
func (s *Store) fit(ops []clientv3.Op, maxOps, budget int) (int, error) {
	size := 0
	for i, op := range ops {
		b := len(op.KeyBytes()) + len(op.ValueBytes())
		if i == 0 && b > budget {
			return 0, fmt.Errorf("key %s holds %d bytes, more than one etcd transaction may carry (%d): shorten the value, or raise etcd's --max-request-bytes and reshard's limit with it", op.KeyBytes(), b, budget)
		}
		if i == maxOps || size+b > budget {
			return i, nil
		}
		size += b
	}
	return min(len(ops), maxOps), nil
}
