package pgerr_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reshard/reshard/internal/pgerr"
)

// TestIsMatchesTheServersCodeThroughWrapping: a server error is recognised by its SQLSTATE
// however deeply it is wrapped; any other error, and nil, match no code.
func TestIsMatchesTheServersCodeThroughWrapping(t *testing.T) {
	undefined := &pgconn.PgError{Code: pgerr.UndefinedTable, Message: `relation "x" does not exist`}
	tests := []struct {
		name  string
		err   error
		codes []string
		want  bool
	}{
		{"same code", undefined, []string{pgerr.UndefinedTable}, true},
		{"wrapped twice", fmt.Errorf("copy: %w", fmt.Errorf("orders: %w", undefined)), []string{pgerr.UndefinedTable}, true},
		{"joined", errors.Join(errors.New("first"), undefined), []string{pgerr.UndefinedTable}, true},
		{"any of several", &pgconn.PgError{Code: pgerr.DeadlockDetected}, []string{pgerr.LockNotAvailable, pgerr.DeadlockDetected}, true},
		{"other code", undefined, []string{pgerr.UndefinedFunction}, false},
		{"no codes", undefined, nil, false},
		{"not a server error", errors.New("42P01"), []string{pgerr.UndefinedTable}, false},
		{"nil", nil, []string{pgerr.UndefinedTable}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pgerr.Is(tt.err, tt.codes...); got != tt.want {
				t.Errorf("Is(%v, %v) = %v, want %v", tt.err, tt.codes, got, tt.want)
			}
		})
	}
}

// TestCodeAndClass: Code is the SQLSTATE of a server error ("" for any other error), and
// InClass matches its first two characters.
func TestCodeAndClass(t *testing.T) {
	conn := fmt.Errorf("read: %w", &pgconn.PgError{Code: "08006"})
	if got := pgerr.Code(conn); got != "08006" {
		t.Errorf("Code = %q, want 08006", got)
	}
	if got := pgerr.Code(errors.New("plain")); got != "" {
		t.Errorf("Code of a plain error = %q, want empty", got)
	}
	if !pgerr.InClass(conn, pgerr.ClassConnectionException) {
		t.Error("08006 is not in class 08")
	}
	if pgerr.InClass(&pgconn.PgError{Code: pgerr.AdminShutdown}, pgerr.ClassConnectionException) {
		t.Error("57P01 is in class 08")
	}
	if pgerr.InClass(errors.New("08006"), pgerr.ClassConnectionException) {
		t.Error("a plain error is in class 08")
	}
}

// TestNamedCodesArePostgreSQLs: the names stand for the codes PostgreSQL's errcodes
// table gives them (a typo here would silently stop a retry or a fallback).
func TestNamedCodesArePostgreSQLs(t *testing.T) {
	for name, tt := range map[string]struct{ got, want string }{
		"unique_violation":                     {pgerr.UniqueViolation, "23505"},
		"check_violation":                      {pgerr.CheckViolation, "23514"},
		"invalid_authorization_specification":  {pgerr.InvalidAuthorizationSpecification, "28000"},
		"invalid_password":                     {pgerr.InvalidPassword, "28P01"},
		"invalid_schema_name":                  {pgerr.InvalidSchemaName, "3F000"},
		"serialization_failure":                {pgerr.SerializationFailure, "40001"},
		"deadlock_detected":                    {pgerr.DeadlockDetected, "40P01"},
		"insufficient_privilege":               {pgerr.InsufficientPrivilege, "42501"},
		"undefined_table":                      {pgerr.UndefinedTable, "42P01"},
		"undefined_object":                     {pgerr.UndefinedObject, "42704"},
		"undefined_function":                   {pgerr.UndefinedFunction, "42883"},
		"too_many_connections":                 {pgerr.TooManyConnections, "53300"},
		"configuration_limit_exceeded":         {pgerr.ConfigurationLimitExceeded, "53400"},
		"object_not_in_prerequisite_state":     {pgerr.ObjectNotInPrerequisiteState, "55000"},
		"object_in_use":                        {pgerr.ObjectInUse, "55006"},
		"lock_not_available":                   {pgerr.LockNotAvailable, "55P03"},
		"admin_shutdown":                       {pgerr.AdminShutdown, "57P01"},
		"crash_shutdown":                       {pgerr.CrashShutdown, "57P02"},
		"cannot_connect_now":                   {pgerr.CannotConnectNow, "57P03"},
		"class connection_exception":           {pgerr.ClassConnectionException, "08"},
		"reshard's fence (class RS, not used)": {pgerr.Fenced, "RS001"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", name, tt.got, tt.want)
		}
	}
}
