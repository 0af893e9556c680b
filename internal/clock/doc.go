// Package clock holds the waits that the packages driving a migration share: a sleep that
// ends early when its context is done, so a stopped move never waits out a backoff.
package clock
