//go:build race

package main

// raceEnabled makes the end-to-end tests build the binary with -race too, reusing the
// test's compiled packages (and checking the binary for races).
const raceEnabled = true
