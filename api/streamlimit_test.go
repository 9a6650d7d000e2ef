package api

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
)

// refusedStream requests a stream that must be refused with 429, and
// returns the error message.
func refusedStream(t *testing.T, srv *streamServer, target string, headers map[string]string) string {
	t.Helper()
	resp, cancel := srv.request(target, headers)
	defer cancel()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "10" {
		t.Fatalf("Retry-After %q, want 10", ra)
	}
	var body errorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Errors) != 1 {
		t.Fatalf("body is not an errors document: %v", err)
	}
	return body.Errors[0]
}

// TestOneAddressCannotHoldMoreAnonymousStreams is the acceptance test of
// #15: an anonymous client cannot open more than MaxStreamsPerIP streams,
// a stream it closes frees its slot, and signed-in streams from the same
// address do not count against it.
func TestOneAddressCannotHoldMoreAnonymousStreams(t *testing.T) {
	const perIP = 3
	e := newEnv(t, func(c *Config) { c.MaxStreamsPerIP = perIP })
	srv := newStreamServer(t, e)
	target := subscribeQuery(`{"/a/b":-1}`)
	var open []*stream
	for i := range perIP {
		st, _, _ := openSub(t, e, srv, i, target, nil)
		open = append(open, st)
	}
	msg := refusedStream(t, srv, target, nil)
	if !strings.Contains(msg, "too many anonymous streams from this address (at most 3 per node)") {
		t.Fatalf("message %q", msg)
	}
	// The same address signed in is another budget.
	openSub(t, e, srv, perIP, target, map[string]string{"Authorization": bearerHeader(userToken(t, "7"))})

	open[0].close()
	testkit.WaitFor(t, "the closed stream's slot to be released", func() bool {
		return e.streamsOpen() == perIP
	})
	openSub(t, e, srv, perIP+1, target, nil)
	refusedStream(t, srv, target, nil)
	if got := e.refused(streamLimitIP); got != 2 {
		t.Fatalf("refused ip streams metric %v, want 2", got)
	}
}

func TestUserStreamLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxStreamsPerUser = 2 })
	srv := newStreamServer(t, e)
	target := subscribeQuery(`{"/a/b":-1}`)
	sam := map[string]string{"Authorization": bearerHeader(userToken(t, "7"))}
	openSub(t, e, srv, 0, target, sam)
	// The ?token= form counts for the same user.
	openSub(t, e, srv, 1, target+"&token="+userToken(t, "7"), nil)
	msg := refusedStream(t, srv, target, sam)
	if !strings.Contains(msg, "rate limited: too many open streams for this user (at most 2 per node)") {
		t.Fatalf("message %q", msg)
	}
	openSub(t, e, srv, 2, target, map[string]string{"Authorization": bearerHeader(userToken(t, "8"))})
	if got := e.refused(streamLimitUser); got != 1 {
		t.Fatalf("refused user streams metric %v, want 1", got)
	}
}

func TestNodeStreamLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxStreams = 2 })
	srv := newStreamServer(t, e)
	target := subscribeQuery(`{"/a/b":-1}`)
	openSub(t, e, srv, 0, target, nil)
	openSub(t, e, srv, 1, target, map[string]string{"Authorization": bearerHeader(userToken(t, "7"))})
	for _, headers := range []map[string]string{nil, {"Authorization": bearerHeader(userToken(t, "8"))}} {
		if msg := refusedStream(t, srv, target, headers); !strings.Contains(msg, "maximum of 2 streams; try another node") {
			t.Fatalf("message %q", msg)
		}
	}
	if _, from, _ := e.svc.subscription(2); from != nil {
		t.Fatal("a refused stream reached the service")
	}
}

// TestRefusedStreamsAreLoggedAtABoundedRate: a client retrying over its
// limit does not log a line per attempt.
func TestRefusedStreamsAreLoggedAtABoundedRate(t *testing.T) {
	logger, logs := testkit.CapturedLogger()
	e := newEnv(t, func(c *Config) { c.MaxStreams = 1; c.Logger = logger })
	srv := newStreamServer(t, e)
	target := subscribeQuery(`{"/a/b":-1}`)
	openSub(t, e, srv, 0, target, nil)
	const attempts = 3 * refusedStreamLogBurst
	for range attempts {
		rec := e.do("GET", target, nil)
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if n := strings.Count(logs.String(), "stream refused"); n != refusedStreamLogBurst {
		t.Fatalf("%d log lines for %d refusals, want the burst of %d", n, attempts, refusedStreamLogBurst)
	}
}

func TestClientPrefix(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	cases := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"ipv4 peer", "203.0.113.7:5000", nil, "203.0.113.7/32"},
		{"ipv6 peer shares its /64", "[2001:db8:1:2:aaaa::1]:5000", nil, "2001:db8:1:2::/64"},
		{"mapped ipv4", "[::ffff:203.0.113.7]:5000", nil, "203.0.113.7/32"},
		{"untrusted peer's header is ignored", "203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7/32"},
		{"trusted proxy names the client", "10.1.2.3:5000", []string{"198.51.100.1"}, "198.51.100.1/32"},
		{"rightmost untrusted entry wins", "10.1.2.3:5000", []string{"1.1.1.1, 198.51.100.1, 10.9.9.9"}, "198.51.100.1/32"},
		{"several header lines", "10.1.2.3:5000", []string{"1.1.1.1", "198.51.100.1 , 10.9.9.9"}, "198.51.100.1/32"},
		{"forged left entries cannot hide the client", "10.1.2.3:5000", []string{"10.2.2.2, 198.51.100.1"}, "198.51.100.1/32"},
		{"malformed entry stops the walk", "10.1.2.3:5000", []string{"198.51.100.1, garbage, 10.9.9.9"}, "10.9.9.9/32"},
		{"only proxies: the last proxy", "10.1.2.3:5000", []string{"10.4.4.4"}, "10.4.4.4/32"},
		{"trusted proxy without header", "10.1.2.3:5000", nil, "10.1.2.3/32"},
		{"ipv6 client behind proxy", "[fd00::1]:5000", []string{"2001:db8:5::9"}, "2001:db8:5::/64"},
		{"not an address", "pipe", nil, "::/64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientPrefix(r, trusted).String(); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestTrustedProxyStreamsCountPerClient: behind a trusted proxy, two
// clients have a budget each although they share the proxy's address.
func TestTrustedProxyStreamsCountPerClient(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxStreamsPerIP = 1
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	srv := newStreamServer(t, e)
	target := subscribeQuery(`{"/a/b":-1}`)
	openSub(t, e, srv, 0, target, map[string]string{"X-Forwarded-For": "198.51.100.1"})
	openSub(t, e, srv, 1, target, map[string]string{"X-Forwarded-For": "198.51.100.2"})
	refusedStream(t, srv, target, map[string]string{"X-Forwarded-For": "198.51.100.1"})
}

func TestStreamLimitReleaseIsIdempotent(t *testing.T) {
	l := newStreamLimiter(1, 1, 1)
	release, err := l.acquire(nil, netip.MustParsePrefix("192.0.2.1/32"))
	if err != nil {
		t.Fatal(err)
	}
	release()
	release()
	if l.open() != 0 || len(l.ips) != 0 {
		t.Fatalf("open %d, ips %v after release", l.open(), l.ips)
	}
	if _, err := l.acquire(nil, netip.MustParsePrefix("192.0.2.1/32")); err != nil {
		t.Fatalf("slot not given back: %v", err)
	}
}

// metricValue reads the counter or gauge name{labels} of e's registry (0
// when absent).
func metricValue(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func (e *env) streamsOpen() int {
	return int(metricValue(e.t, e, "presence_http_sse_streams", map[string]string{}))
}

func (e *env) refused(limit string) float64 {
	return metricValue(e.t, e, "presence_http_sse_streams_refused_total", map[string]string{"limit": limit})
}
