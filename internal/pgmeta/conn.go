package pgmeta

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/catalog"
)

// Querier is what pgmeta reads through: a *pgx.Conn, a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// DefaultConnectTimeout bounds a connection attempt when the DSN sets none.
const DefaultConnectTimeout = 5 * time.Second

// Connect opens one connection (application_name reshard). A failure says which server
// (password masked) and what went wrong.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bad DSN %s: %s", catalog.MaskDSN(dsn), scrub(err.Error(), dsn, ""))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "reshard"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %s", catalog.MaskDSN(dsn), oneLine(scrub(err.Error(), dsn, cfg.Password)))
	}
	return conn, nil
}

// scrub removes a password from a message, whatever quoted it.
func scrub(msg, dsn, password string) string {
	if password == "" {
		if c, err := pgconn.ParseConfig(dsn); err == nil {
			password = c.Password
		}
	}
	if password != "" {
		msg = strings.ReplaceAll(msg, password, "****")
	}
	return msg
}

// oneLine folds pgx's multi-line connect error (one line per address and attempt, often
// repeated) into one line without repeats.
func oneLine(msg string) string {
	var parts []string
	seen := map[string]bool{}
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || seen[l] {
			continue
		}
		seen[l] = true
		parts = append(parts, l)
	}
	return strings.Join(parts, " ")
}

// WalLevel returns the server's wal_level (minimal, replica or logical).
func WalLevel(ctx context.Context, q Querier) (string, error) {
	var lvl string
	if err := q.QueryRow(ctx, "SHOW wal_level").Scan(&lvl); err != nil {
		return "", fmt.Errorf("read wal_level: %w", err)
	}
	return lvl, nil
}

// Strings runs a query whose rows are one text column and returns the column's values in
// row order. Errors are returned as they come: the caller says what it was looking for.
func Strings(ctx context.Context, q Querier, sql string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
