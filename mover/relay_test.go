package mover

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/internal/testenv"
)

// TestRelayCopy runs the wire-level relay between two real servers: a clean copy leaves
// both sessions usable (the source still in its transaction); a row the target refuses
// midway, or a source query that fails midway, ends with that side's error, reported as
// PostgreSQL gave it, and closed connections.
func TestRelayCopy(t *testing.T) {
	testenv.Integration(t)
	ctx := context.Background()
	const ddl = `CREATE TABLE r (k bigint PRIMARY KEY, v text NOT NULL, d numeric, j jsonb)`
	srcPG, dstPG, src, dst := pair(t, ctx, ddl)
	if _, err := src.Exec(ctx, `INSERT INTO r SELECT g, repeat('v', g % 3000), g / 7.0, jsonb_build_object('g', g)
		FROM generate_series(1, 50000) g`); err != nil {
		t.Fatal(err)
	}
	connect := func(pg *testenv.PG) *pgx.Conn {
		c, err := pgx.Connect(ctx, pg.DSNApp())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	const out = `COPY (SELECT k, v, d, j FROM r WHERE k <= 40000 ORDER BY k) TO STDOUT (FORMAT binary)`
	const in = `COPY r (k, v, d, j) FROM STDIN (FORMAT binary)`

	t.Run("clean", func(t *testing.T) {
		sc, dc := connect(srcPG), connect(dstPG)
		if _, err := sc.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ"); err != nil {
			t.Fatal(err)
		}
		var metered int64
		rows, err := relayCopy(ctx, sc.PgConn(), dc.PgConn(), out, in, func(_ context.Context, n int) error { metered += int64(n); return nil })
		if err != nil || rows != 40000 {
			t.Fatalf("relay: %d rows, %v", rows, err)
		}
		var inTx bool
		if err := sc.QueryRow(ctx, "SELECT now() = statement_timestamp()").Scan(&inTx); err != nil || inTx {
			t.Errorf("source session after the relay: in transaction = %v, %v", !inTx, err)
		}
		if _, err := sc.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
		var n int64
		var same bool
		if err := dc.QueryRow(ctx, "SELECT count(*), sum(length(v)) = (SELECT sum(g % 3000) FROM generate_series(1, 40000) g) FROM r").Scan(&n, &same); err != nil || n != 40000 || !same {
			t.Fatalf("target after the relay: %d rows, same text %v, %v", n, same, err)
		}
		if metered < 40000*8 {
			t.Errorf("metered %d bytes", metered)
		}
		if _, err := dst.Exec(ctx, "TRUNCATE r"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("target refuses a row", func(t *testing.T) {
		if _, err := dst.Exec(ctx, "ALTER TABLE r ADD CONSTRAINT r_no_31000 CHECK (k <> 31000)"); err != nil {
			t.Fatal(err)
		}
		defer dst.Exec(ctx, "ALTER TABLE r DROP CONSTRAINT r_no_31000")
		sc, dc := connect(srcPG), connect(dstPG)
		_, err := relayCopy(ctx, sc.PgConn(), dc.PgConn(), out, in, nil)
		var re *relayError
		var pgErr *pgconn.PgError
		if !errors.As(err, &re) || re.side != "target" || !errors.As(err, &pgErr) || pgErr.ConstraintName != "r_no_31000" {
			t.Fatalf("want the target's check violation, got %v", err)
		}
		if !sc.IsClosed() || !dc.IsClosed() {
			t.Errorf("connections left open after a failed relay: source %v, target %v", !sc.IsClosed(), !dc.IsClosed())
		}
		var n int64
		if err := dst.QueryRow(ctx, "SELECT count(*) FROM r").Scan(&n); err != nil || n != 0 {
			t.Errorf("target holds %d rows after a failed copy (%v)", n, err)
		}
	})

	t.Run("source fails midway", func(t *testing.T) {
		sc, dc := connect(srcPG), connect(dstPG)
		_, err := relayCopy(ctx, sc.PgConn(), dc.PgConn(),
			`COPY (SELECT k, v, d, j FROM r WHERE 1 / (k - 30000) IS NOT NULL ORDER BY k) TO STDOUT (FORMAT binary)`, in, nil)
		var re *relayError
		if !errors.As(err, &re) || re.side != "source" || !strings.Contains(err.Error(), "division by zero") {
			t.Fatalf("want the source's division by zero, got %v", err)
		}
		var n int64
		if err := dst.QueryRow(ctx, "SELECT count(*) FROM r").Scan(&n); err != nil || n != 0 {
			t.Errorf("target holds %d rows after a failed copy (%v)", n, err)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		sc, dc := connect(srcPG), connect(dstPG)
		cctx, cancel := context.WithCancel(ctx)
		_, err := relayCopy(cctx, sc.PgConn(), dc.PgConn(), out, in, func(context.Context, int) error { cancel(); return nil })
		if !errors.Is(err, errRelayAborted) || !errors.Is(err, context.Canceled) {
			t.Fatalf("want an aborted relay, got %v", err)
		}
	})
}

// TestRelayForward feeds forwardData a source stream made by hand: rows of every size
// (one larger than the read buffer), split anywhere, with a notice amid them. The target
// must receive CopyData messages whose payloads add up to the rows, byte for byte, and the
// CopyDone after them must be left unread.
func TestRelayForward(t *testing.T) {
	msg := func(typ byte, body []byte) []byte {
		out := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(out[1:], uint32(len(body)+4))
		return append(out, body...)
	}
	var stream, want []byte
	for i, n := range []int{0, 1, 7, 100, relayBufSize + 12345, 3, 64 << 10} {
		row := bytes.Repeat([]byte{byte('a' + i)}, n)
		want = append(want, row...)
		stream = append(stream, msg('d', row)...)
		if i == 3 {
			stream = append(stream, msg('N', []byte("SNOTICE\x00Mhello\x00\x00"))...)
		}
	}
	stream = append(stream, msg('c', nil)...)
	stream = append(stream, msg('C', []byte("COPY 7\x00"))...)

	for _, split := range []int{1, 3, 5, 4096, len(stream)} {
		srcEnd, srcConn := net.Pipe()
		dstConn, dstEnd := net.Pipe()
		go func() {
			for rest := stream; len(rest) > 0; {
				k := min(split, len(rest))
				if _, err := srcEnd.Write(rest[:k]); err != nil {
					return
				}
				rest = rest[k:]
			}
		}()
		got := make(chan []byte)
		go func() {
			var payload []byte
			r := &msgReader{conn: dstEnd, buf: make([]byte, 0, 1024)}
			for {
				typ, body, err := r.next()
				if err != nil || typ != 'd' {
					got <- payload
					return
				}
				payload = append(payload, body...)
			}
		}()
		var metered int
		sr := &msgReader{conn: srcConn, buf: make([]byte, 0, relayBufSize)}
		err := sr.forwardData(context.Background(), dstConn, func(_ context.Context, n int) error { metered += n; return nil }, func() bool { return false })
		if err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		typ, _, err := sr.next()
		if err != nil || typ != 'c' {
			t.Fatalf("split %d: after the data: %q, %v", split, typ, err)
		}
		dstConn.Close()
		if p := <-got; !bytes.Equal(p, want) {
			t.Errorf("split %d: target got %d bytes, want %d", split, len(p), len(want))
		}
		if metered != len(want) {
			t.Errorf("split %d: metered %d bytes, want %d", split, metered, len(want))
		}
		srcEnd.Close()
	}
}
