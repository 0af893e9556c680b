package mover

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The copy relay moves a chunk from the source's COPY TO STDOUT into the target's COPY FROM
// STDIN at the wire level. The source sends one CopyData message per row; the target
// accepts any split of the stream into CopyData messages; so the rows' bytes are
// gathered, a whole socket read at a time, into one CopyData message for the target.
// Nothing is parsed but the five-byte message headers. Going through pgconn's CopyTo and
// CopyFrom instead handled every row as a message in the mover (about 1 s of mover CPU
// per million rows); passing the source's messages on unchanged cost the target about 20%
// more CPU than large messages (one message to take apart per row).
//
// The connections are used directly after pgconn.SyncConn, as pgconn documents; both
// are back to idle (the source still inside its snapshot's transaction) when the relay
// returns nil. After an error their protocol state is unknown: the relay closes them.

// relayBufSize is the relay's read buffer: one per copy worker.
const relayBufSize = 256 << 10

// relayMaxMessage bounds a control message (an error report) the relay holds whole;
// CopyData messages are streamed, whatever their size.
const relayMaxMessage = 16 << 20

// errRelayAborted is returned for a relay stopped by its context.
var errRelayAborted = errors.New("copy relay aborted")

// relayMeter is told of the row bytes about to be forwarded, before they are written:
// it may block (rate limit, pause) or stop the relay with an error.
type relayMeter func(ctx context.Context, rowBytes int) error

// relayError says which side failed.
type relayError struct {
	side string // "source" or "target"
	err  error
}

func (e *relayError) Error() string { return e.side + ": " + e.err.Error() }
func (e *relayError) Unwrap() error { return e.err }

// relayCopy runs out (a COPY ... TO STDOUT) on src and in (a COPY ... FROM STDIN) on dst,
// forwards the data and returns the rows the target loaded.
func relayCopy(ctx context.Context, src, dst *pgconn.PgConn, out, in string, meter relayMeter) (rows int64, err error) {
	for _, c := range []struct {
		side string
		pc   *pgconn.PgConn
	}{{"source", src}, {"target", dst}} {
		if err := c.pc.SyncConn(ctx); err != nil {
			return 0, &relayError{c.side, err}
		}
	}
	sc, dc := src.Conn(), dst.Conn()
	ok := false
	defer func() {
		if !ok {
			// Mid-protocol: neither connection can be used again.
			_ = src.Close(context.Background())
			_ = dst.Close(context.Background())
		}
	}()
	var cancelled atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		cancelled.Store(true)
		past := time.Unix(1, 0)
		_ = sc.SetDeadline(past)
		_ = dc.SetDeadline(past)
	})
	defer stop()
	wrap := func(side string, err error) error {
		if cancelled.Load() {
			return fmt.Errorf("%w: %w", errRelayAborted, ctx.Err())
		}
		return &relayError{side, err}
	}

	// The target first: if it refuses the COPY, the source has not started streaming.
	tr := &msgReader{conn: dc, buf: make([]byte, 0, 8<<10)}
	if err := sendQuery(dc, in); err != nil {
		return 0, wrap("target", err)
	}
	if err := tr.expect('G'); err != nil {
		return 0, wrap("target", err)
	}
	if err := sendQuery(sc, out); err != nil {
		return 0, wrap("source", err)
	}
	sr := &msgReader{conn: sc, buf: make([]byte, 0, relayBufSize)}
	if err := sr.expect('H'); err != nil {
		return 0, wrap("source", err)
	}

	// The target reports an error (a constraint, a full disk) while the data still flows;
	// it then reads and drops data until CopyDone. A reader watches for it, so that a
	// failed chunk stops at once instead of streaming to its end.
	type result struct {
		rows int64
		err  error
	}
	targetDone := make(chan result, 1)
	var targetFailed atomic.Bool
	go func() {
		tag, err := tr.untilReady()
		if err != nil {
			targetFailed.Store(true)
			targetDone <- result{err: err}
			return
		}
		n, _ := strconv.ParseInt(strings.TrimPrefix(tag, "COPY "), 10, 64)
		targetDone <- result{rows: n}
	}()
	targetErr := func() error {
		_ = dc.SetReadDeadline(time.Unix(1, 0)) // the reader may still wait for the end
		r := <-targetDone
		if cancelled.Load() {
			return fmt.Errorf("%w: %w", errRelayAborted, ctx.Err())
		}
		return &relayError{"target", r.err}
	}

	if err := sr.forwardData(ctx, dc, meter, targetFailed.Load); err != nil {
		switch {
		case targetFailed.Load():
			return 0, targetErr()
		case cancelled.Load():
			return 0, fmt.Errorf("%w: %w", errRelayAborted, ctx.Err())
		}
		return 0, err // a relayError, or the meter's own (context, throttle)
	}
	// The source's COPY ended; the rest of its reply up to ReadyForQuery.
	if _, err := sr.untilReady(); err != nil {
		return 0, wrap("source", err)
	}
	if _, err := dc.Write([]byte{'c', 0, 0, 0, 4}); err != nil {
		return 0, wrap("target", err)
	}
	r := <-targetDone
	if r.err != nil {
		return 0, wrap("target", r.err)
	}
	if !stop() {
		// The context ended and its callback moved the deadlines: the sessions would fail
		// their next command, so they are closed like any other interrupted relay's.
		return 0, fmt.Errorf("%w: %w", errRelayAborted, ctx.Err())
	}
	_ = sc.SetDeadline(time.Time{})
	_ = dc.SetDeadline(time.Time{})
	ok = true
	return r.rows, nil
}

func sendQuery(c net.Conn, sql string) error {
	msg, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return err
	}
	_, err = c.Write(msg)
	return err
}

// msgReader reads backend messages from a raw connection.
type msgReader struct {
	conn net.Conn
	buf  []byte // unread bytes are buf[r:]
	r    int
}

// fill reads more bytes, keeping buf[r:]; it makes room for at least need bytes.
func (m *msgReader) fill(need int) error {
	if m.r > 0 {
		n := copy(m.buf[:cap(m.buf)], m.buf[m.r:])
		m.buf, m.r = m.buf[:n], 0
	}
	if need > cap(m.buf) {
		if need > relayMaxMessage {
			return fmt.Errorf("protocol message of %d bytes", need)
		}
		nb := make([]byte, len(m.buf), need)
		copy(nb, m.buf)
		m.buf = nb
	}
	n, err := m.conn.Read(m.buf[len(m.buf):cap(m.buf)])
	m.buf = m.buf[:len(m.buf)+n]
	if n > 0 {
		return nil
	}
	return err
}

// next returns the next whole message (type and body), valid until the next call.
func (m *msgReader) next() (byte, []byte, error) {
	for {
		if avail := len(m.buf) - m.r; avail >= 5 {
			size := 1 + int(binary.BigEndian.Uint32(m.buf[m.r+1:]))
			if size < 5 {
				return 0, nil, fmt.Errorf("bad protocol message length %d", size)
			}
			if avail >= size {
				typ, body := m.buf[m.r], m.buf[m.r+5:m.r+size]
				m.r += size
				return typ, body, nil
			}
			if err := m.fill(size); err != nil {
				return 0, nil, err
			}
			continue
		}
		if err := m.fill(5); err != nil {
			return 0, nil, err
		}
	}
}

// expect reads up to a message of type want; an error report fails it (after reading up
// to ReadyForQuery, which leaves the session usable had it not been in a COPY).
func (m *msgReader) expect(want byte) error {
	for {
		typ, body, err := m.next()
		if err != nil {
			return err
		}
		switch typ {
		case want:
			return nil
		case 'E':
			perr := pgError(body)
			_, _ = m.untilReady()
			return perr
		case 'Z':
			return fmt.Errorf("server ended the command without the expected %q message", want)
		}
	}
}

// untilReady reads to ReadyForQuery and returns the last CommandComplete tag, or the
// first error report.
func (m *msgReader) untilReady() (string, error) {
	var tag string
	var first error
	for {
		typ, body, err := m.next()
		if err != nil {
			if first != nil {
				return "", first
			}
			return "", err
		}
		switch typ {
		case 'C':
			tag = strings.TrimRight(string(body), "\x00")
		case 'E':
			if first == nil {
				first = pgError(body)
			}
		case 'Z':
			return tag, first
		case 'd':
			return "", errors.New("protocol: copy data after the end of the copy")
		}
	}
}

// forwardData streams the source's CopyData messages to w until the first message that
// ends them (CopyDone, or an error report), which is left unread. Notices and parameter
// reports, which may come amid the data, are read and dropped.
func (m *msgReader) forwardData(ctx context.Context, w net.Conn, meter relayMeter, abort func() bool) error {
	inMsg := 0 // bytes of the current CopyData message not yet passed on
	out := make([]byte, 5, 5+cap(m.buf))
	out[0] = 'd'
	for {
		// Walk the buffered bytes: the payload of whole or partial CopyData messages is
		// gathered into one CopyData message for the target.
		pos := m.r
		out = out[:5]
		var other byte // the type of a message of another kind found at pos
		for pos < len(m.buf) {
			if inMsg > 0 {
				k := min(inMsg, len(m.buf)-pos)
				out = append(out, m.buf[pos:pos+k]...)
				pos += k
				inMsg -= k
				continue
			}
			if len(m.buf)-pos < 5 {
				break
			}
			if m.buf[pos] != 'd' {
				other = m.buf[pos]
				break
			}
			size := 1 + int(binary.BigEndian.Uint32(m.buf[pos+1:]))
			if size < 5 {
				return &relayError{"source", fmt.Errorf("bad CopyData length %d", size)}
			}
			pos += 5
			inMsg = size - 5
		}
		m.r = pos
		if len(out) > 5 {
			if abort() {
				return &relayError{"target", errors.New("the target failed")}
			}
			if meter != nil {
				if err := meter(ctx, len(out)-5); err != nil {
					return err
				}
			}
			binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
			if _, err := w.Write(out); err != nil {
				return &relayError{"target", err}
			}
		}
		switch other {
		case 0:
		case 'N', 'S', 'A':
			if _, _, err := m.next(); err != nil {
				return &relayError{"source", err}
			}
			continue
		default:
			return nil
		}
		if m.r == len(m.buf) {
			m.buf, m.r = m.buf[:0], 0
		}
		if err := m.fill(5); err != nil {
			return &relayError{"source", err}
		}
	}
}

func pgError(body []byte) error {
	var er pgproto3.ErrorResponse
	if err := er.Decode(body); err != nil {
		return fmt.Errorf("undecodable error report: %w", err)
	}
	return pgconn.ErrorResponseToPgError(&er)
}
