package pgerr

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// The SQLSTATEs reshard reacts to, named as PostgreSQL's errcodes table names them.
const (
	UniqueViolation                   = "23505" // unique_violation
	CheckViolation                    = "23514" // check_violation
	InvalidAuthorizationSpecification = "28000" // invalid_authorization_specification
	InvalidPassword                   = "28P01" // invalid_password
	InvalidSchemaName                 = "3F000" // invalid_schema_name
	SerializationFailure              = "40001" // serialization_failure
	DeadlockDetected                  = "40P01" // deadlock_detected
	InsufficientPrivilege             = "42501" // insufficient_privilege
	UndefinedTable                    = "42P01" // undefined_table
	UndefinedObject                   = "42704" // undefined_object
	UndefinedFunction                 = "42883" // undefined_function
	TooManyConnections                = "53300" // too_many_connections
	ConfigurationLimitExceeded        = "53400" // configuration_limit_exceeded
	ObjectNotInPrerequisiteState      = "55000" // object_not_in_prerequisite_state
	ObjectInUse                       = "55006" // object_in_use
	LockNotAvailable                  = "55P03" // lock_not_available
	AdminShutdown                     = "57P01" // admin_shutdown
	CrashShutdown                     = "57P02" // crash_shutdown
	CannotConnectNow                  = "57P03" // cannot_connect_now
)

// ClassConnectionException is SQLSTATE class 08: the connection failed or broke.
const ClassConnectionException = "08"

// Fenced is the SQLSTATE of a write the cutover's guard trigger refuses (see
// docs/decisions.md). Class RS is not used by PostgreSQL, so no server error is mistaken
// for a fence.
const Fenced = "RS001"

// Code returns the SQLSTATE of the server error err wraps, or "" if it wraps none.
func Code(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// Is reports whether err wraps a server error whose SQLSTATE is one of codes.
func Is(err error, codes ...string) bool {
	c := Code(err)
	if c == "" {
		return false
	}
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

// InClass reports whether err wraps a server error of the SQLSTATE class (its first two
// characters), e.g. ClassConnectionException.
func InClass(err error, class string) bool {
	c := Code(err)
	return c != "" && strings.HasPrefix(c, class)
}
