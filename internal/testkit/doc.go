// Package testkit holds the helpers every test of the project shares:
// polling for a condition with a deadline (never a fixed sleep), loggers
// for tests, free loopback ports, a recorder of change callbacks, a fake
// HTTP endpoint and file names for what a test leaves behind. It imports
// nothing of the project, so the tests of every package, down to the
// lowest, can use it.
package testkit
