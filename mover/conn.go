package mover

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reshard/reshard/catalog"
	"github.com/reshard/reshard/internal/pgerr"
)

// role names a side of the move in messages.
type role string

const (
	source role = "source"
	target role = "target"
)

// SessionPrefix starts the application_name of every session a mover of migration id
// opens ("reshard/<id>/<what>"): a driver that takes a migration over finds the sessions
// of the one that lost it by this prefix. A migration id is at most 48 characters, so the
// prefix survives PostgreSQL's 63-byte cut of the name.
func SessionPrefix(id string) string { return "reshard/" + id + "/" }

func appName(id, what string) string {
	n := SessionPrefix(id) + what
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

// textSettings fix how a session writes values as text and reads them back, whatever the
// server's, database's or role's defaults, as PostgreSQL's own walreceiver does: the
// catch-up stream, the text-format copy and the values read from the source for the apply
// are text, and the target must parse them as the source meant them (a DMY date read as
// MDY is another day; extra_float_digits below 1 rounds floats).
var textSettings = map[string]string{
	"DateStyle":          "ISO",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"client_encoding":    "UTF8",
}

func pinTextSettings(params map[string]string) {
	for k, v := range textSettings {
		params[k] = v
	}
}

// connect opens one ordinary connection; settings go in the startup packet (no round trip).
func connect(ctx context.Context, r role, dsn, app string, settings ...string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: bad connection string %s: %w", r, catalog.MaskDSN(dsn), err)
	}
	pinTextSettings(cfg.RuntimeParams)
	cfg.RuntimeParams["application_name"] = app
	for i := 0; i+1 < len(settings); i += 2 {
		cfg.RuntimeParams[settings[i]] = settings[i+1]
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot connect to %s: %w", r, catalog.MaskDSN(dsn), err)
	}
	return conn, nil
}

// openPool opens a pool of at most size connections (the control connection of a shard).
func openPool(ctx context.Context, r role, dsn, app string, size int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: bad connection string %s: %w", r, catalog.MaskDSN(dsn), err)
	}
	cfg.MaxConns = size
	cfg.MinConns = 0
	pinTextSettings(cfg.ConnConfig.RuntimeParams)
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	if r == target {
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			_, err := setupTargetSession(ctx, c)
			return err
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot connect to %s: %w", r, catalog.MaskDSN(dsn), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: cannot connect to %s: %w", r, catalog.MaskDSN(dsn), err)
	}
	return pool, nil
}

// bypassSetting is the setting that lets reshard's own sessions through the cutover's fence
// trigger (a target may hold a tombstone fence for this range from an earlier move away).
const bypassSetting = "reshard.bypass"

// setupTargetSession prepares a session that writes moved rows on the target: replica
// mode (as PostgreSQL's own apply worker runs) so that user triggers, the fence trigger
// and foreign-key checks do not fire for rows that were already checked on the source.
// It reports whether replica mode is on; without the privilege to set it the copy falls
// back to loading tables one after the other in the configured FK-safe order.
func setupTargetSession(ctx context.Context, c *pgx.Conn) (replica bool, err error) {
	if _, err := c.Exec(ctx, "SET "+bypassSetting+" = 'on'; SET statement_timeout = 0"); err != nil {
		return false, fmt.Errorf("target: set %s and statement_timeout: %w", bypassSetting, err)
	}
	_, err = c.Exec(ctx, "SET session_replication_role = replica")
	if pgerr.Is(err, pgerr.InsufficientPrivilege) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("target: set session_replication_role: %w", err)
	}
	return true, nil
}

// connectReplication opens a logical replication connection to the source database.
func connectReplication(ctx context.Context, dsn, app string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("source: bad connection string %s: %w", catalog.MaskDSN(dsn), err)
	}
	pinTextSettings(cfg.RuntimeParams)
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if pgerr.Is(err, pgerr.InvalidAuthorizationSpecification, pgerr.InvalidPassword, pgerr.InsufficientPrivilege) {
		return nil, fmt.Errorf("source: cannot open a replication connection to %s (the role needs the REPLICATION attribute and pg_hba.conf a replication entry): %w", catalog.MaskDSN(dsn), err)
	}
	if err != nil {
		return nil, fmt.Errorf("source: cannot open a replication connection to %s: %w", catalog.MaskDSN(dsn), err)
	}
	return conn, nil
}

// closeQuietly closes a connection with a fresh short context (the caller's may be done).
func closeQuietly(c *pgx.Conn) {
	if c != nil {
		closeWithin(c.Close)
	}
}

func closeReplQuietly(c *pgconn.PgConn) {
	if c != nil {
		closeWithin(c.Close)
	}
}

func closeWithin(close func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = close(ctx)
}
