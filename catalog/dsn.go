package catalog

import (
	"net/url"
	"regexp"
	"strings"
)

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// DSNHasPassword reports whether a libpq DSN (key=value or URL form) carries a password.
func DSNHasPassword(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, ok := u.User.Password(); ok {
			return true
		}
		return u.Query().Get("password") != ""
	}
	return kvPassword.MatchString(dsn)
}

// MaskDSN replaces any password in a DSN with "****", for messages and logs.
func MaskDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Get("password") != "" {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return strings.ReplaceAll(u.String(), "xxxxx", "****")
	}
	return kvPassword.ReplaceAllString(dsn, "${1}****")
}
