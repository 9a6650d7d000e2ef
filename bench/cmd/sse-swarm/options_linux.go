//go:build linux

package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// devJWTSecret is the secret of a node started with --dev.
const devJWTSecret = "dev-jwt-secret-not-for-production"

// maxChannelsPerStream is what the node's presence engine accepts.
const maxChannelsPerStream = 50

type options struct {
	url               string
	node              netip.AddrPort
	host              string // Host header
	streams           int
	channelsPerStream int
	channels          int
	prefix            string
	jwtSecret         string
	runID             string
	source            netip.Addr
	perSource         int
	loops, window     int
	pid               int
	metrics           bool
	settle            time.Duration
	enters            int
	openTimeout       time.Duration
	deliverTimeout    time.Duration
	hold              time.Duration
	leave             bool
}

const usageHead = `usage: sse-swarm [flags]

Holds many idle SSE streams open against one presence node with two epoll
event loops (raw non-blocking sockets, about 130 bytes of state per
stream), then makes one user enter a channel every stream follows and
measures how many streams read the entering_users frame, and when. It
reports the node's memory per stream (its RSS before and after opening the
streams: --pid, and/or its /metrics) and CPU time per delivered frame (--pid).

Every stream follows <prefix>all plus channels-per-stream - 1 channels of a
pool of --channels, and signs in as its own user (token query parameter), so
per-user limits and the anonymous per-IP limit of a node do not apply.
Source addresses are spread over 127.0.0.0/8 (--per-source streams each from
--source on), past the ~28,000 ephemeral ports of one address.

The node must allow the streams: start it with an open-file limit above
--streams + 1,000 (ulimit -n 1048576 in a root shell before starting it),
and if it limits streams per node (--max-streams, default 100,000) with a
limit above --streams. This tool raises its own limit (root raises the hard
limit too). Example, 100,000 streams of 10 channels against a --dev node:

  ulimit -n 1048576; presence-node --dev ... --http 127.0.0.1:28380 &
  sse-swarm --url http://127.0.0.1:28380 --streams 100000 --pid $!

Flags:
`

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("sse-swarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var source string
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "the node's base URL (http, IPv4)")
	fs.IntVar(&o.streams, "streams", 100_000, "streams to open")
	fs.IntVar(&o.channelsPerStream, "channels-per-stream", 10, "channels each stream follows: <prefix>all and this many - 1 of the pool (the node accepts 50)")
	fs.IntVar(&o.channels, "channels", 10_000, "channels in the pool, <prefix>0 .. <prefix>N-1")
	fs.StringVar(&o.prefix, "prefix", "/demo/swarm/", "channel name prefix (--dev makes /demo/... public)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", devJWTSecret, "HS256 secret of the node (default: the --dev secret)")
	fs.StringVar(&o.runID, "run-id", "", "user ids are <run-id>-s<i> (streams) and <run-id>-enter-<k>; default random")
	fs.StringVar(&source, "source", "127.0.0.1", "first local address to connect from; the next ones follow it")
	fs.IntVar(&o.perSource, "per-source", 20_000, "streams per local address (the ephemeral port range holds about 28,000)")
	fs.IntVar(&o.loops, "loops", 2, "event loops (goroutines driving the sockets)")
	fs.IntVar(&o.window, "window", 256, "streams being set up at once (connected, waiting for the node's first frame)")
	fs.IntVar(&o.pid, "pid", 0, "the node's process id, for its RSS (/proc/<pid>/status) and CPU time (0: not read)")
	fs.BoolVar(&o.metrics, "metrics", true, "read the node's RSS and heap from its /metrics too")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "wait this long after the streams are open before reading the node's memory again")
	fs.IntVar(&o.enters, "enters", 1, "enters to measure, one after the other (each a new user)")
	fs.DurationVar(&o.openTimeout, "open-timeout", 15*time.Minute, "give up opening streams after this long")
	fs.DurationVar(&o.deliverTimeout, "deliver-timeout", 60*time.Second, "give up waiting for an enter to reach every stream after this long")
	fs.DurationVar(&o.hold, "hold", 0, "keep the streams open this long after the measurements (to inspect the node)")
	fs.BoolVar(&o.leave, "leave", true, "make the entering users leave at the end")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.source, err = netip.ParseAddr(source); err != nil || !o.source.Is4() {
		return nil, fmt.Errorf("--source %q: want an IPv4 address", source)
	}
	if o.runID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.runID = "sw" + hex.EncodeToString(b[:])
	}
	if err := o.resolve(); err != nil {
		return nil, err
	}
	return o, o.validate()
}

// resolve finds the node's IPv4 address and port in --url.
func (o *options) resolve() error {
	u, err := url.Parse(o.url)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("--url %q: want http://host:port", o.url)
	}
	o.url = strings.TrimRight(u.Scheme+"://"+u.Host, "/")
	o.host = u.Host
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	addr, err := net.ResolveTCPAddr("tcp4", hostport)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	o.node = addr.AddrPort()
	o.node = netip.AddrPortFrom(o.node.Addr().Unmap(), o.node.Port())
	return nil
}

func (o *options) validate() error {
	switch {
	case o.streams < 1:
		return errors.New("--streams must be positive")
	case o.channelsPerStream < 1 || o.channelsPerStream > maxChannelsPerStream:
		return fmt.Errorf("--channels-per-stream must be 1..%d", maxChannelsPerStream)
	case o.channelsPerStream > 1 && o.channels < o.channelsPerStream-1:
		return errors.New("--channels must hold at least --channels-per-stream - 1 channels")
	case o.perSource < 1 || o.loops < 1 || o.window < 1 || o.enters < 0:
		return errors.New("--per-source, --loops and --window must be positive, --enters >= 0")
	case o.openTimeout <= 0 || o.deliverTimeout <= 0 || o.settle < 0 || o.hold < 0:
		return errors.New("timeouts must be positive, --settle and --hold >= 0")
	case strings.ContainsAny(o.prefix+o.runID, "\"\\<>&") || strings.ContainsFunc(o.prefix+o.runID, func(r rune) bool { return r < 0x20 }):
		return errors.New("--prefix and --run-id must not need JSON escaping (quotes, backslashes, <, >, &, control characters)")
	}
	srcs := o.sources()
	if loopback := netip.MustParsePrefix("127.0.0.0/8"); !loopback.Contains(srcs[0]) || !loopback.Contains(srcs[len(srcs)-1]) {
		return fmt.Errorf("--source %v: the %d addresses from it must stay in 127.0.0.0/8", o.source, len(srcs))
	}
	return nil
}

// target is the channel every stream follows.
func (o *options) target() string { return o.prefix + "all" }

// channelsOf are stream i's channels: the target and channels-per-stream -
// 1 consecutive channels of the pool.
func (o *options) channelsOf(i int) []string {
	out := make([]string, 0, o.channelsPerStream)
	out = append(out, o.target())
	for j := range o.channelsPerStream - 1 {
		out = append(out, o.prefix+strconv.Itoa((i*(o.channelsPerStream-1)+j)%o.channels))
	}
	return out
}

// sources are the local addresses the streams need.
func (o *options) sources() []netip.Addr {
	n := (o.streams + o.perSource - 1) / o.perSource
	out := make([]netip.Addr, 0, n)
	a := o.source
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}
