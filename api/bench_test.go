package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/presence"
)

// benchUsers is how many distinct users (tokens) the benchmarks rotate over.
const benchUsers = 10_000

// benchNode is the HTTP handler over a real engine and resolver, configured
// like a --dev node ("demo" public), plus a token per user.
type benchNode struct {
	h      http.Handler
	tokens []string
}

// newDemoEngine returns an engine in which every /demo/ channel is public,
// with its metrics registry; it is closed when b ends.
func newDemoEngine(b testing.TB) (*presence.Engine, *prometheus.Registry) {
	b.Helper()
	resolver := presence.NewResolver(presence.ResolverConfig{})
	doc := `{"rules": [{"match": "/demo/.+", "config": {"public": true}}]}`
	if err := resolver.SetDocument("demo", []byte(doc)); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	engine, err := presence.NewEngine(presence.EngineConfig{Configs: resolver, Metrics: presence.NewMetrics(reg)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { engine.Close(context.Background()) })
	return engine, reg
}

func newBenchNode(b *testing.B) *benchNode {
	b.Helper()
	engine, reg := newDemoEngine(b)
	h, err := New(Config{
		Service:    engine,
		Prefixes:   newFakePrefixes(),
		Cluster:    &fakeCluster{ready: true},
		JWTSecrets: [][]byte{[]byte(testSecret)},
		AdminToken: testAdminToken,
		Registry:   reg,
		RateBurst:  1 << 30, // measure the work, not 429s
	})
	if err != nil {
		b.Fatal(err)
	}
	n := &benchNode{h: h, tokens: make([]string, benchUsers)}
	exp := time.Now().Add(time.Hour).Unix()
	for i := range n.tokens {
		claims := jwt.MapClaims{"sub": fmt.Sprint("u", i), "username": fmt.Sprint("user", i), "name": "Some Body", "exp": exp}
		if n.tokens[i], err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret)); err != nil {
			b.Fatal(err)
		}
	}
	n.warm(b)
	return n
}

// warm enters every user's client into its channel, so that the measured
// requests are heartbeats (the bulk of presence traffic), not first enters.
func (n *benchNode) warm(b *testing.B) {
	b.Helper()
	w := &discardWriter{h: http.Header{}}
	for u := range benchUsers {
		r := httptest.NewRequest(http.MethodPost, "/presence/update", strings.NewReader(updateBody(u)))
		r.Header.Set("Authorization", "Bearer "+n.tokens[u])
		r.Header.Set("Content-Type", "application/json")
		w.code = 0
		n.h.ServeHTTP(w, r)
		if w.code != http.StatusOK {
			b.Fatalf("warm-up update: status %d", w.code)
		}
	}
}

// updateBody is a heartbeat of user i's client into one of its channels.
func updateBody(i int) string {
	return fmt.Sprintf(`{"client_id":"c%d","present_channels":["/demo/load/%d"]}`, i%benchUsers, i%1000)
}

// discardWriter is a minimal ResponseWriter, so that the benchmark measures
// the handler rather than a recorder.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// trivialHandler is the load tool's baseline: read the body, answer {"ok":true}.
var trivialHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
})

// BenchmarkUpdateHandler measures the server-side cost of one heartbeat
// POST /presence/update in-process (no network), against the trivial
// handler under the same harness.
func BenchmarkUpdateHandler(b *testing.B) {
	n := newBenchNode(b)
	bodies := make([]string, benchUsers)
	for i := range bodies {
		bodies[i] = updateBody(i)
	}
	run := func(b *testing.B, h http.Handler) {
		var seq atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(1)) * 7919
			w := &discardWriter{h: http.Header{}}
			for pb.Next() {
				u := i % benchUsers
				r := httptest.NewRequest(http.MethodPost, "/presence/update", strings.NewReader(bodies[u]))
				r.Header.Set("Authorization", "Bearer "+n.tokens[u])
				r.Header.Set("Content-Type", "application/json")
				clear(w.h)
				w.code = 0
				h.ServeHTTP(w, r)
				if w.code != 0 && w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
				i++
			}
		})
	}
	b.Run("presence", func(b *testing.B) { run(b, n.h) })
	b.Run("trivial", func(b *testing.B) { run(b, trivialHandler) })
}

// BenchmarkUpdateLoopback measures keep-alive HTTP/1.1 over loopback TCP,
// client and server in one process, for the presence handler and the
// trivial one: the ratio of their ns/op is target 2's ratio without the
// load tool's bookkeeping.
func BenchmarkUpdateLoopback(b *testing.B) {
	n := newBenchNode(b)
	run := func(b *testing.B, h http.Handler) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		var seq atomic.Int64
		b.SetParallelism(16)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(1)) * 7919
			for pb.Next() {
				u := i % benchUsers
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/presence/update", strings.NewReader(updateBody(u)))
				req.Header.Set("Authorization", "Bearer "+n.tokens[u])
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
				i++
			}
		})
	}
	b.Run("presence", func(b *testing.B) { run(b, n.h) })
	b.Run("trivial", func(b *testing.B) { run(b, trivialHandler) })
}
