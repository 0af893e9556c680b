package mover

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

const (
	segmentChanges  = 500     // changes per segment handed to the applier
	segmentBytes    = 1 << 20 // or this many bytes
	statusInterval  = time.Second
	statusMinGap    = 100 * time.Millisecond
	receiveDeadline = 100 * time.Millisecond
)

// receiver reads the pgoutput stream, decodes it into segments for the applier, answers
// keepalives and reports the applied position to the source. It is the only user of the
// replication connection.
type receiver struct {
	conn    *pgconn.PgConn
	tables  map[string]*table // target tables by schema.table
	key     string
	start   pglogrepl.LSN // transactions committed before it were applied already
	applied func() pglogrepl.LSN
	th      *throttle
	out     chan<- segment

	rels       map[uint32]*relation
	lastStatus time.Time
	lastSent   pglogrepl.LSN
	lastWalEnd pglogrepl.LSN
}

// run receives until ctx ends or the stream fails; it closes out when it returns.
func (r *receiver) run(ctx context.Context) error {
	defer close(r.out)
	r.rels = map[uint32]*relation{}
	var cur *segment
	inTx, skip := false, false
	for {
		if err := r.status(false); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, receiveDeadline)
		raw, err := r.conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("source: replication stream: %w", err)
		}
		var data []byte
		switch msg := raw.(type) {
		case *pgproto3.CopyData:
			data = msg.Data
		case *pgproto3.ErrorResponse:
			return classifyStreamErr(pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errStreamEnded
		default:
			continue
		}
		if len(data) == 0 {
			continue
		}
		switch data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
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
			if !inTx && pkm.ServerWALEnd > r.lastWalEnd {
				r.lastWalEnd = pkm.ServerWALEnd
				if err := r.send(ctx, segment{keepalive: true, walEnd: pkm.ServerWALEnd, serverTime: pkm.ServerTime}); err != nil {
					return err
				}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(data[1:])
			if err != nil {
				return fatalf("source: bad XLogData: %v", err)
			}
			if err := r.th.wait(ctx, len(xld.WALData)); err != nil {
				return err
			}
			lm, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return fatalf("source: cannot decode a pgoutput message: %v", err)
			}
			switch m := lm.(type) {
			case *pglogrepl.BeginMessage:
				inTx = true
				// After a reconnect the server may resend from its confirmed position:
				// a transaction whose commit lies before the start was applied already.
				skip = m.FinalLSN < r.start
				cur = &segment{begin: true, finalLSN: m.FinalLSN}
			case *pglogrepl.RelationMessage:
				rel, err := newRelation(m, r.tables, r.key)
				if err != nil {
					return err
				}
				r.rels[m.RelationID] = rel
			case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
				if skip {
					continue
				}
				if cur == nil {
					return fatalf("source: a change arrived outside a transaction")
				}
				c, err := decodeChange(lm, r.rels)
				if err != nil {
					return err
				}
				cur.changes = append(cur.changes, c)
				if len(cur.changes) >= segmentChanges || segSize(cur) >= segmentBytes {
					if err := r.send(ctx, *cur); err != nil {
						return err
					}
					cur = &segment{}
				}
			case *pglogrepl.CommitMessage:
				inTx = false
				if skip || cur == nil {
					skip, cur = false, nil
					continue
				}
				cur.commit, cur.endLSN, cur.commitTime = true, m.TransactionEndLSN, m.CommitTime
				if err := r.send(ctx, *cur); err != nil {
					return err
				}
				cur = nil
			case *pglogrepl.TruncateMessage:
				if skip {
					continue
				}
				return fatalf("source: a TRUNCATE arrived, which a row-filtered move cannot follow: cancel the migration and start it again")
			default:
				// Type, Origin and logical decoding messages change nothing on the target.
			}
		}
	}
}

func segSize(s *segment) int {
	n := 0
	for i := range s.changes {
		n += s.changes[i].size
	}
	return n
}

// send hands a segment to the applier; while it waits (the applier is busy) it keeps
// reporting to the source so that the WAL sender does not time out.
func (r *receiver) send(ctx context.Context, s segment) error {
	t := time.NewTimer(statusInterval)
	defer t.Stop()
	for {
		select {
		case r.out <- s:
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
