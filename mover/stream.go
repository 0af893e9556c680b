package mover

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/reshard/reshard/catalog"
)

const (
	segmentChanges = 500              // changes per segment of a large transaction
	segmentBytes   = 1 << 20          // or this many bytes
	handOffChanges = 1000             // hand pending segments to the applier at this many changes
	handOffDelay   = time.Millisecond // or when the first has waited this long
	// While the applier is busy (a round trip to the target), the receiver reads on and
	// keeps what it decodes, up to this many bytes of changes: so the WAL sender does not
	// wait for the target's commits, and the applier then takes it all at once.
	queueBytes      = 4 << 20
	statusInterval  = time.Second
	statusMinGap    = 100 * time.Millisecond
	receiveDeadline = 100 * time.Millisecond

	// A WAL sender sends every message on its own, as soon as it is decoded. Read as
	// eagerly, a backlog cost the mover a wake-up and a read per message (a few small
	// ones per source transaction): more CPU than its decoding and applying together,
	// taken from the WAL sender that shares the machine. So when the socket's data runs
	// out less than coalesceGap after the previous read and that read was not a full
	// buffer (about coalesceMessages messages: the mover is behind, read on at once), the
	// receiver waits coalesceDelay for more. A quiet stream (the previous read waited
	// longer than coalesceGap) is read at once, and so is every stream while someone
	// waits in WaitApplied (a cutover's catch-ups): the window waits for no sleep. Measured
	// on the backlog benchmark: mover CPU 1.0-1.2 s -> 0.7 s per 40k transactions.
	coalesceMessages = 64
	coalesceGap      = time.Millisecond
	coalesceDelay    = time.Millisecond
)

// receiver reads the pgoutput stream, decodes it into segments for the applier, answers
// keepalives and reports the applied position to the source. It is the only user of the
// replication connection.
type receiver struct {
	id      string // the migration's, for messages
	conn    *pgconn.PgConn
	tables  map[string]*table // target tables by schema.table
	key     catalog.Keyspace
	start   pglogrepl.LSN // transactions committed before it were applied already
	applied func() pglogrepl.LSN
	th      *throttle
	out     chan<- []segment
	eager   func() bool // true while someone waits for a position: no coalescing

	// pending segments go to the applier together: one hand-off per many small source
	// transactions, and a buffer large enough that the stream keeps flowing while the
	// applier waits on the target.
	pending        []segment
	pendingChanges int
	pendingBytes   int
	pendingSince   time.Time
	retryAt        time.Time // a hand-off found the applier busy: try again then

	rels       map[uint32]*relation
	lastStatus time.Time
	lastSent   pglogrepl.LSN
	lastWalEnd pglogrepl.LSN

	drained      time.Time // when the read buffer last ran empty
	sinceDrained int       // messages read since
	deadline     time.Time // the socket's read deadline (renewDeadline)

	// The source transaction being decoded: cur is its segment (nil outside one), skip
	// says it was applied before a reconnect.
	cur        *segment
	inTx, skip bool
}

// coalesce waits a moment before a read of a busy stream that would return only a few
// messages (see coalesceDelay).
func (r *receiver) coalesce(now time.Time) {
	if r.conn.Frontend().ReadBufferLen() > 0 {
		r.sinceDrained++
		return
	}
	busy := r.sinceDrained < coalesceMessages && now.Sub(r.drained) < coalesceGap && (r.eager == nil || !r.eager())
	r.sinceDrained = 1
	if busy {
		time.Sleep(coalesceDelay)
		now = time.Now()
	}
	r.drained = now
}

// run receives until ctx ends or the stream fails; it closes out when it returns.
func (r *receiver) run(ctx context.Context) error {
	defer close(r.out)
	r.rels = map[uint32]*relation{}
	defer r.conn.Conn().SetReadDeadline(time.Time{})
	// A stop wakes a waiting read at once rather than at its deadline: Stop is on the
	// path of every cutover.
	wake := context.AfterFunc(ctx, func() { _ = r.conn.Conn().SetReadDeadline(time.Unix(1, 0)) })
	defer wake()
	for {
		data, err := r.receive(ctx)
		if err != nil {
			return err
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			err = r.keepalive(data[1:])
		case pglogrepl.XLogDataByteID:
			err = r.xlogData(ctx, data[1:])
		}
		if err != nil {
			return err
		}
	}
}

// receive reports status and hands pending segments off when they are due, then reads
// the next message. It returns no data, and no error, when there is nothing to decode:
// the read timed out, or the message was not CopyData.
func (r *receiver) receive(ctx context.Context) ([]byte, error) {
	if err := r.status(false); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	now := time.Now()
	due := r.pendingChanges >= handOffChanges || now.Sub(r.pendingSince) >= handOffDelay
	if len(r.pending) > 0 && due && !now.Before(r.retryAt) {
		if err := r.handOff(ctx); err != nil {
			return nil, err
		}
	}
	if err := r.renewDeadline(ctx, now); err != nil {
		return nil, err
	}
	r.coalesce(now)
	raw, err := r.conn.ReceiveMessage(context.Background())
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if pgconn.Timeout(err) {
			r.deadline = time.Time{}
			return nil, nil
		}
		return nil, fmt.Errorf("source: replication stream: %w", err)
	}
	switch msg := raw.(type) {
	case *pgproto3.CopyData:
		return msg.Data, nil
	case *pgproto3.ErrorResponse:
		return nil, classifyStreamErr(pgconn.ErrorResponseToPgError(msg))
	case *pgproto3.CopyDone:
		return nil, errStreamEnded
	}
	return nil, nil
}

// renewDeadline moves the socket's read deadline when it draws near, or earlier when
// pending segments are due. Reads wake up at least every receiveDeadline to report status
// and notice ctx. A deadline on the socket, renewed only when it draws near, costs nothing
// per message (a context per ReceiveMessage would cost a timer and a callback each).
func (r *receiver) renewDeadline(ctx context.Context, now time.Time) error {
	want := now.Add(receiveDeadline)
	if len(r.pending) > 0 {
		want = r.pendingSince.Add(handOffDelay)
		if want.Before(r.retryAt) {
			want = r.retryAt
		}
	}
	if want.Before(r.deadline) || r.deadline.Sub(now) < receiveDeadline/4 {
		r.deadline = want
		if err := r.conn.Conn().SetReadDeadline(r.deadline); err != nil {
			return fmt.Errorf("source: replication stream: %w", err)
		}
		if ctx.Err() != nil { // stopped between the caller's check and the new deadline
			return ctx.Err()
		}
	}
	return nil
}

// keepalive answers a keepalive that asks for a reply and, between transactions, queues
// its WAL end as a position for the applier.
func (r *receiver) keepalive(data []byte) error {
	pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data)
	if err != nil {
		return fatalf("source: bad keepalive: %v", err)
	}
	if pkm.ReplyRequested {
		// Answer at once, or wal_sender_timeout drops the connection.
		if err := r.status(true); err != nil {
			return err
		}
	}
	// Everything before the server's WAL end has been sent; when no transaction is
	// open, the applier may move the position there once it has applied the rest.
	if !r.inTx && pkm.ServerWALEnd > r.lastWalEnd {
		r.lastWalEnd = pkm.ServerWALEnd
		r.queue(segment{keepalive: true, walEnd: pkm.ServerWALEnd, serverTime: pkm.ServerTime})
	}
	return nil
}

// xlogData decodes one pgoutput message, after the throttle lets its bytes through.
func (r *receiver) xlogData(ctx context.Context, data []byte) error {
	xld, err := pglogrepl.ParseXLogData(data)
	if err != nil {
		return fatalf("source: bad XLogData: %v", err)
	}
	if err := r.th.wait(ctx, len(xld.WALData)); err != nil {
		return err
	}
	if len(xld.WALData) == 0 {
		return nil
	}
	if k := xld.WALData[0]; k == 'I' || k == 'U' || k == 'D' {
		// Row changes, the bulk of the stream, take the short way.
		return r.change(ctx, xld.WALData)
	}
	lm, err := pglogrepl.Parse(xld.WALData)
	if err != nil {
		return fatalf("source: cannot decode a pgoutput message: %v", err)
	}
	switch m := lm.(type) {
	case *pglogrepl.BeginMessage:
		r.inTx = true
		// After a reconnect the server may resend from its confirmed position:
		// a transaction whose commit lies before the start was applied already.
		r.skip = m.FinalLSN < r.start
		r.cur = &segment{begin: true, finalLSN: m.FinalLSN}
	case *pglogrepl.RelationMessage:
		rel, err := newRelation(m, r.tables, r.key)
		if err != nil {
			return err
		}
		r.rels[m.RelationID] = rel
	case *pglogrepl.CommitMessage:
		r.commit(m)
	case *pglogrepl.TruncateMessage:
		// Never applied: row filters do not apply to TRUNCATE, which would empty
		// the target's table of every tenant.
		if !r.skip {
			return truncatedError(r.id, r.relNames(m.RelationIDs))
		}
	case *pglogrepl.LogicalDecodingMessage:
		if !r.skip {
			return truncateMessage(r.id, m.Prefix, m.Content, r.tables)
		}
	default:
		// Type and Origin messages change nothing on the target.
	}
	return nil
}

// change adds an insert, update or delete to the open transaction's segment; a large
// transaction goes on to the applier in pieces, so memory stays bounded.
func (r *receiver) change(ctx context.Context, wal []byte) error {
	if r.skip {
		return nil
	}
	if r.cur == nil {
		return fatalf("source: a change arrived outside a transaction")
	}
	c, err := decodeChange(wal, r.rels)
	if err != nil {
		return err
	}
	r.cur.changes = append(r.cur.changes, c)
	r.cur.size += c.size
	if len(r.cur.changes) >= segmentChanges || r.cur.size >= segmentBytes {
		r.queue(*r.cur)
		if err := r.handOff(ctx); err != nil {
			return err
		}
		r.cur = &segment{}
	}
	return nil
}

// commit closes the open transaction's last segment and queues it.
func (r *receiver) commit(m *pglogrepl.CommitMessage) {
	r.inTx = false
	cur := r.cur
	r.cur = nil
	if r.skip || cur == nil {
		r.skip = false
		return
	}
	if cur.begin && len(cur.changes) == 0 {
		// Only a logical message (a fence marker, a nudge): a position for the
		// applier, not a target transaction the cutover would wait for.
		r.queue(segment{keepalive: true, walEnd: m.TransactionEndLSN, serverTime: m.CommitTime})
		return
	}
	cur.commit, cur.endLSN, cur.commitTime = true, m.TransactionEndLSN, m.CommitTime
	r.queue(*cur)
}

// relNames names relations by their Relation messages.
func (r *receiver) relNames(ids []uint32) []string {
	names := make([]string, len(ids))
	for i, id := range ids {
		if rel, ok := r.rels[id]; ok {
			names[i] = rel.name
		} else {
			names[i] = fmt.Sprintf("relation %d", id)
		}
	}
	return names
}

func (r *receiver) queue(s segment) {
	if len(r.pending) == 0 {
		r.pendingSince = time.Now()
	}
	r.pending = append(r.pending, s)
	r.pendingChanges += len(s.changes) + 1
	r.pendingBytes += s.size
}

// handOff gives the pending segments to the applier if it takes them now; if it is busy
// (a round trip to the target), they stay pending, and grow, until the next try,
// handOffDelay later. Only past queueBytes does the receiver wait for the applier.
func (r *receiver) handOff(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	if r.pendingBytes >= queueBytes {
		return r.waitHandOff(ctx)
	}
	select {
	case r.out <- r.pending:
		r.pending, r.pendingChanges, r.pendingBytes = nil, 0, 0
	default:
		r.retryAt = time.Now().Add(handOffDelay)
	}
	return nil
}

// waitHandOff gives the pending segments to the applier; while it waits (the applier is
// busy) it keeps reporting to the source so that the WAL sender does not time out.
func (r *receiver) waitHandOff(ctx context.Context) error {
	if len(r.pending) == 0 {
		return nil
	}
	t := time.NewTimer(statusInterval)
	defer t.Stop()
	for {
		select {
		case r.out <- r.pending:
			r.pending, r.pendingChanges, r.pendingBytes = nil, 0, 0
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := r.status(true); err != nil {
				return err
			}
			t.Reset(statusInterval)
		}
	}
}

// status reports the applied position as written, flushed and applied. All three are set
// explicitly: pglogrepl would replace a zero flush position with the write position, and
// the source may discard WAL up to the flush position.
func (r *receiver) status(force bool) error {
	applied := r.applied()
	now := time.Now()
	due := now.Sub(r.lastStatus) >= statusInterval || (applied != r.lastSent && now.Sub(r.lastStatus) >= statusMinGap)
	if !force && !due {
		return nil
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: applied,
		WALFlushPosition: applied,
		WALApplyPosition: applied,
		ClientTime:       now,
	})
	if err != nil {
		return fmt.Errorf("source: send standby status: %w", err)
	}
	r.lastStatus, r.lastSent = now, applied
	return nil
}

// classifyStreamErr turns an error the WAL sender reports into a fatal one unless a
// reconnect may cure it.
func classifyStreamErr(err error) error {
	if transient(err) {
		return fmt.Errorf("source: replication stream: %w", err)
	}
	return &fatalError{fmt.Errorf("source: replication stream failed (slot or publication gone, or the source cannot decode): %w", err)}
}
