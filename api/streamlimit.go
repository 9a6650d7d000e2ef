package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
)

// streamRetryAfter is the Retry-After of a refused stream. Streams last
// for minutes or hours, so no moment is known at which a slot frees up;
// this paces the reconnect loop of a client over its limit.
const streamRetryAfter = 10 * time.Second

// ipv6ClientBits is the prefix length under which IPv6 clients share one
// anonymous-stream budget: a single subscriber line usually gets a whole
// /64, so counting single addresses would not bound anything.
const ipv6ClientBits = 64

// Which limit refused a stream: the label of the refusal metric and log.
const (
	streamLimitUser = "user"
	streamLimitIP   = "ip"
	streamLimitNode = "node"
)

// streamLimitError refuses a stream over one of the limits (a 429).
type streamLimitError struct {
	limit string // streamLimitUser, streamLimitIP or streamLimitNode
	max   int
}

func (e *streamLimitError) Error() string {
	switch e.limit {
	case streamLimitUser:
		return fmt.Sprintf("%v: too many open streams for this user (at most %d per node); close some", presence.ErrRateLimited, e.max)
	case streamLimitIP:
		return fmt.Sprintf("%v: too many anonymous streams from this address (at most %d per node); sign in or close some", presence.ErrRateLimited, e.max)
	}
	return fmt.Sprintf("%v: this node serves its maximum of %d streams; try another node", presence.ErrRateLimited, e.max)
}

func (e *streamLimitError) Unwrap() error { return presence.ErrRateLimited }

// RetryAfter is when the client may try again.
func (e *streamLimitError) RetryAfter() time.Duration { return streamRetryAfter }

// streamLimiter counts the open SSE streams of a node: per signed-in user,
// per client address for anonymous streams, and in all. Its maps hold
// only keys with open streams, so they are bounded by the node limit.
type streamLimiter struct {
	maxPerUser, maxPerIP, maxTotal int

	mu    sync.Mutex
	total int
	users map[string]int
	ips   map[netip.Prefix]int
}

func newStreamLimiter(perUser, perIP, total int) *streamLimiter {
	return &streamLimiter{
		maxPerUser: perUser, maxPerIP: perIP, maxTotal: total,
		users: make(map[string]int), ips: make(map[netip.Prefix]int),
	}
}

// acquire takes a slot for a stream of u (anonymous: from client) and
// returns the function that gives it back; a *streamLimitError when a
// limit is reached, in which case nothing is taken.
func (l *streamLimiter) acquire(u *presence.User, client netip.Prefix) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	anonymous := u.Anonymous()
	switch {
	case !anonymous && l.users[u.ID] >= l.maxPerUser:
		return nil, &streamLimitError{limit: streamLimitUser, max: l.maxPerUser}
	case anonymous && l.ips[client] >= l.maxPerIP:
		return nil, &streamLimitError{limit: streamLimitIP, max: l.maxPerIP}
	case l.total >= l.maxTotal:
		return nil, &streamLimitError{limit: streamLimitNode, max: l.maxTotal}
	}
	l.total++
	if anonymous {
		l.ips[client]++
	} else {
		l.users[u.ID]++
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(u, anonymous, client) }) }, nil
}

func (l *streamLimiter) release(u *presence.User, anonymous bool, client netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if anonymous {
		decrement(l.ips, client)
	} else {
		decrement(l.users, u.ID)
	}
}

// decrement lowers m[k], dropping the key at zero.
func decrement[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// open returns the number of open streams (for tests).
func (l *streamLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// clientPrefix returns the address an anonymous stream is counted under:
// the client's IPv4 address, or the /64 of its IPv6 address. The peer of
// the connection is the client unless it is one of trusted, a proxy or
// load balancer in front of the node; then X-Forwarded-For names the
// client (see forwardedClient). An unparsable peer (not TCP, as in some
// tests) counts as one client.
func clientPrefix(r *http.Request, trusted []netip.Prefix) netip.Prefix {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	addr := peer.Addr()
	if err != nil {
		addr = netip.IPv6Unspecified()
	}
	addr = addr.Unmap()
	if contains(trusted, addr) {
		addr = forwardedClient(r.Header.Values("X-Forwarded-For"), trusted, addr)
	}
	bits := addr.BitLen()
	if addr.Is6() {
		bits = ipv6ClientBits
	}
	p, _ := addr.Prefix(bits) // bits is within the address length
	return p
}

// forwardedClient reads X-Forwarded-For from the right: each proxy appends
// the address it received the request from, so the rightmost address not
// of a trusted proxy is the client. Addresses to its left were written by
// the client itself and prove nothing. Without a usable entry the proxy
// (peer) is the client.
func forwardedClient(headers []string, trusted []netip.Prefix, peer netip.Addr) netip.Addr {
	client := peer
	for i := len(headers) - 1; i >= 0; i-- {
		entries := splitCommas(headers[i])
		for j := len(entries) - 1; j >= 0; j-- {
			addr, err := netip.ParseAddr(entries[j])
			if err != nil {
				return client // malformed: trust nothing further left
			}
			client = addr.Unmap()
			if !contains(trusted, client) {
				return client
			}
		}
	}
	return client
}

// splitCommas splits a header value into its trimmed, non-empty entries.
func splitCommas(v string) []string {
	var out []string
	for len(v) > 0 {
		var entry string
		entry, v, _ = strings.Cut(v, ",")
		if entry = strings.TrimSpace(entry); entry != "" {
			out = append(out, entry)
		}
	}
	return out
}

func contains(prefixes []netip.Prefix, addr netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// refusedStreamLog logs refused streams at a bounded rate: a client (or
// an attack) retrying over its limit would otherwise log a line for each
// attempt. Its budget is separate from the 503 log's.
type refusedStreamLog struct{ throttle *logThrottle }

// log writes one line for a refused stream, unless the rate is spent.
func (l *refusedStreamLog) log(log *slog.Logger, u *presence.User, client netip.Prefix, err *streamLimitError) {
	skipped, ok := l.throttle.allow()
	if !ok {
		return
	}
	who := []any{"limit", err.limit, "max", err.max, "not_logged_before", skipped}
	if u.Anonymous() {
		who = append(who, "client", client.String())
	} else {
		who = append(who, "user", u.ID)
	}
	log.Warn("stream refused", who...)
}
