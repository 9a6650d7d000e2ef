// Command presence-load drives presence nodes over HTTP the way browsers
// do: users with several clients heartbeat, enter and leave channels while
// SSE subscribers measure how long an enter takes to reach them. It compares
// the result with a trivial in-process handler and, optionally, with
// Discourse's Redis algorithm. See bench/README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/presencehq/presence/bench/token"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its outputs injected; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "presence-load:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.runID == "" {
		o.runID = randomID()
	}
	minter, err := token.NewMinter(o.jwtSecret, 24*time.Hour, time.Now)
	if err != nil {
		fmt.Fprintln(stderr, "presence-load:", err)
		return 2
	}
	if o.cpuProfile != "" {
		stopProfile, err := startProfile(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "presence-load:", err)
			return 2
		}
		defer stopProfile()
	}
	b := &bench{o: o, minter: minter, log: stderr, rep: newReport(o)}
	if err := b.all(ctx); err != nil {
		fmt.Fprintln(stderr, "presence-load:", err)
		return 1
	}
	if o.plot != "" {
		if err := b.rep.writePlot(o.plot); err != nil {
			b.rep.note("plot not written: %v", err)
		}
	}
	if o.json {
		err = b.rep.writeJSON(stdout)
	} else {
		b.rep.writeText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "presence-load:", err)
		return 1
	}
	return 0
}

// startProfile starts a CPU profile into path and returns its stop.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "load" + hex.EncodeToString(b[:])
}
