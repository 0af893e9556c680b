package pgcluster

import "syscall"

// detached puts pg_ctl (and so the postmaster) in its own session, so a Ctrl-C on the
// terminal that ran `reshard dev up` does not reach the dev servers.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
