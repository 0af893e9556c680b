package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Shard slots: how several drivers of one plan keep its per-shard limit (one move at a time
// on a shard) between them. A driver that takes a step's migration lock then claims the slot
// of each shard the step touches: a key under locks/slots/ created only if absent, in one
// transaction that also compares that the lock is still held, and put on the lock's own
// lease. So a slot lives exactly as long as the claim: Unlock revokes the lease and deletes
// the slots with it, and a driver that dies loses lock and slots together when the lease
// expires, which is when another driver may take the step over.

// ErrSlotBusy: a shard's move slot is held by another migration. The error wrapping it
// (*SlotBusyError) names the shard and the holder.
var ErrSlotBusy = errors.New("shard move slot busy")

// SlotBusyError says which shard's slot is taken, and by whom.
type SlotBusyError struct {
	Shard  string
	Holder string // the claim's description: migration id and driver
}

func (e *SlotBusyError) Error() string {
	return fmt.Sprintf("shard %s runs another move (%s): its slot is released when that move ends or its driver's lease expires", e.Shard, e.Holder)
}

// Is makes errors.Is(err, ErrSlotBusy) true.
func (e *SlotBusyError) Is(target error) bool { return target == ErrSlotBusy }

func (s *Store) slotKey(shard string) (string, error) {
	if !ValidName(shard) {
		return "", fmt.Errorf("%w: shard name %q", ErrInvalid, shard)
	}
	return s.key(pfxLocks + "slots/" + shard), nil
}

// ClaimSlots claims the move slot of every shard in shards for migration id, whose lock l
// this process holds: all or none, and only while l is held. It returns a *SlotBusyError
// (errors.Is ErrSlotBusy) when a slot is taken, and an error wrapping ErrLockLost when l is
// not held any more. The slots are released with l (Unlock, or its lease expiring).
func (s *Store) ClaimSlots(ctx context.Context, l *Lock, id string, shards ...string) error {
	keys := make([]string, len(shards))
	for i, sh := range shards {
		k, err := s.slotKey(sh)
		if err != nil {
			return err
		}
		keys[i] = k
	}
	lease := l.session.Lease()
	val := fmt.Sprintf("migration %s, %s", id, s.holder)
	cmps := []clientv3.Cmp{l.IsOwner()}
	var puts, gets []clientv3.Op
	for _, k := range keys {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		puts = append(puts, clientv3.OpPut(k, val, clientv3.WithLease(lease)))
		gets = append(gets, clientv3.OpGet(k))
	}
	resp, unknown, err := s.sendTxn(ctx, cmps, puts)
	if err != nil {
		return fmt.Errorf("claim the move slots of %s for %s: %w", strings.Join(shards, ", "), id, err)
	}
	if resp.Succeeded {
		return nil
	}
	// Failed compares: a slot is taken (by us, if an unanswered attempt applied: every key
	// on our lease), or the lock is gone.
	now, err := s.read(ctx, gets...)
	if err != nil {
		return fmt.Errorf("claim the move slots of %s for %s: read them: %w", strings.Join(shards, ", "), id, s.wrapEtcd(err))
	}
	ours := 0
	for i, r := range now.Responses {
		kvs := r.GetResponseRange().Kvs
		switch {
		case len(kvs) == 0:
		case unknown && clientv3.LeaseID(kvs[0].Lease) == lease:
			ours++
		default:
			return &SlotBusyError{Shard: shards[i], Holder: string(kvs[0].Value)}
		}
	}
	if ours == len(keys) {
		return nil
	}
	if held, herr := s.held(ctx, l); herr == nil && !held {
		return fmt.Errorf("claim the move slots for %s: %w", id, ErrLockLost)
	}
	return fmt.Errorf("claim the move slots of %s for %s: they changed while being claimed: try again", strings.Join(shards, ", "), id)
}

// SlotHolders returns, for every shard whose move slot is taken, the claim's description.
func (s *Store) SlotHolders(ctx context.Context) (map[string]string, error) {
	pfx := s.key(pfxLocks + "slots/")
	resp, err := s.get(ctx, pfx, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the shards' move slots: %w", s.wrapEtcd(err))
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), pfx)] = string(kv.Value)
	}
	return out, nil
}
