// Package proc runs presence-node processes on loopback for fault tests:
// it picks free ports, starts each node with the contract's flags and its
// own data directory, writes each node's output to a log file, and sends
// the signals a chaos test needs (SIGKILL, SIGTERM with the exit measured,
// SIGSTOP and SIGCONT). A restarted node keeps its name, ports and data
// directory. Build compiles the binary for suites that were not given one;
// the process chaos suite and the browser tests both start their nodes here.
package proc
