// Command reshard rebalances and re-partitions multi-tenant PostgreSQL shards online.
//
// This package is only the command line: each command's file parses its flags, calls the
// packages that do the work (catalog, planner, migrate, cutover, mover, partitions, ui,
// internal/devstack) and prints the result through one printer for -o text|json
// (output.go). root.go lists every command in one AddCommand call; main.go maps the
// outcome to the exit codes of README.md. docs/architecture.md shows the packages.
package main
