// Package pgcluster creates, starts and stops throwaway PostgreSQL clusters with the
// server binaries of the machine (initdb, pg_ctl). It is what the test harness and
// `reshard dev` stand on.
//
// A cluster lives in one folder: the data directory, its log and nothing else. Every
// cluster is configured for logical replication (wal_level=logical, enough slots and
// senders) and listens on 127.0.0.1 only, with trust authentication: these clusters are
// for tests and local development, never for data anyone needs.
//
// PostgreSQL refuses to run as root. When the process is root, every server command runs
// as the `postgres` user through runuser, and the folders are handed to that user.
//
// initdb runs once per machine (per user and server version) into a template folder in
// the temp dir; each new cluster is a copy of the template, which is what makes starting
// several clusters a matter of a second or two.
package pgcluster
