// Package layout holds no code, only tests of the repository's layout rules, so that a
// change that breaks one fails `make test`: every package has a doc.go and a row in
// docs/architecture.md, no function outside tests is longer than 120 lines, no file
// outside internal/pgerr spells a bare SQLSTATE, and nothing points at a design file
// outside the repository (docs/ says it all).
package layout
