//go:build !linux

// Command sse-swarm needs Linux (epoll, /proc).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "sse-swarm: Linux only (epoll event loops, /proc)")
	os.Exit(2)
}
