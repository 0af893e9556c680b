//go:build race

package integration

// raceEnabled builds the binary of the end-to-end fault tests with -race too, which reuses
// the test's compiled packages.
const raceEnabled = true
