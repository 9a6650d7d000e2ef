// Command bare-handler serves the baseline of the heartbeat benchmark: a
// net/http server whose every POST only decodes its JSON body and answers
// {"ok":true} (load.TrivialHandler, the same handler the load tool measures
// in-process). No token check, no state: what net/http and decoding the body
// cost on the machine, the ceiling a presence server is compared with.
//
//	bare-handler --http 127.0.0.1:28191
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/presencehq/presence/bench/load"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bare-handler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8091", "HTTP bind address")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bare-handler: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "bare-handler:", err)
		return 1
	}
	// The node's server timeouts, so that only the handler differs.
	srv := &http.Server{
		Handler:           http.HandlerFunc(load.TrivialHandler),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stderr, "bare-handler listening on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "bare-handler:", err)
		return 1
	}
	return 0
}
