// Package pgerr is where reshard names the PostgreSQL SQLSTATEs it acts on, and the one
// way it tests an error for them: pgerr.Is(err, pgerr.UndefinedTable). No other file
// spells a bare code, so a reader finds every code reshard reacts to here, with its name
// from PostgreSQL's errcodes table (Appendix A of its manual).
package pgerr
