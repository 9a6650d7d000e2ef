package api

import (
	"crypto/ed25519"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/jwtkeys"
	"github.com/presencehq/presence/presence"
)

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		return Config{Service: &fakeService{}, Prefixes: newFakePrefixes(), Cluster: &fakeCluster{},
			JWTSecrets: [][]byte{[]byte("s")}, AdminToken: "a"}
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	onlyKeys := base()
	onlyKeys.JWTSecrets = nil
	onlyKeys.JWTPublicKeys = []jwtkeys.Key{{Alg: jwtkeys.EdDSA, Public: make(ed25519.PublicKey, ed25519.PublicKeySize)}}
	if _, err := New(onlyKeys); err != nil {
		t.Fatalf("public keys without a secret: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no service":     func(c *Config) { c.Service = nil },
		"no prefixes":    func(c *Config) { c.Prefixes = nil },
		"no cluster":     func(c *Config) { c.Cluster = nil },
		"no secret":      func(c *Config) { c.JWTSecrets = nil },
		"no admin token": func(c *Config) { c.AdminToken = "" },
		"negative body":  func(c *Config) { c.MaxBodyBytes = -1 },
		"negative rate":  func(c *Config) { c.RateRefillPerSecond = -1 },
		"empty origin":   func(c *Config) { c.CORSOrigins = []string{""} },
		"empty secret":   func(c *Config) { c.JWTSecrets = [][]byte{[]byte("s"), nil} },
		"dev, no secret": func(c *Config) {
			c.Dev = true
			c.JWTSecrets = nil
			c.JWTPublicKeys = []jwtkeys.Key{{Alg: jwtkeys.EdDSA, Public: make(ed25519.PublicKey, ed25519.PublicKeySize)}}
		},
		"negative streams": func(c *Config) { c.MaxStreamsPerIP = -1 },
		"invalid proxy":    func(c *Config) { c.TrustedProxies = []netip.Prefix{{}} },
	} {
		c := base()
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}

func TestNotFoundAndMethodNotAllowedAreJSON(t *testing.T) {
	e := newEnv(t, nil)
	for target, want := range map[string]int{"/nope": 404, "/presence": 404, "/admin/prefixes/a/b": 404} {
		rec := e.do("GET", target, nil)
		if rec.Code != want {
			t.Fatalf("%s: %d", target, rec.Code)
		}
		errorsOf(t, rec)
	}
	rec := e.do("DELETE", "/presence/get", nil)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("status %d", rec.Code)
	}
	errorsOf(t, rec)
}

func TestPanicIsRecoveredAs500JSON(t *testing.T) {
	e := newEnv(t, nil)
	e.svc.getFn = func([]string) map[string]*presence.ChannelState { panic("boom") }
	rec := e.do("GET", getQuery([]string{"/a/b"}), nil)
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d", rec.Code)
	}
	if msgs := errorsOf(t, rec); strings.Contains(msgs[0], "boom") {
		t.Fatalf("panic value leaked: %q", msgs[0])
	}
	if got := requestCount(t, e, "/presence/get", "GET", "500"); got != 1 {
		t.Fatalf("500 counted %v times", got)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	e := newEnv(t, nil)
	if rec := e.do("GET", "/healthz", nil); rec.Code != http.StatusOK {
		t.Fatalf("healthz %d", rec.Code)
	}
	if rec := e.do("GET", "/readyz", nil); rec.Code != http.StatusOK {
		t.Fatalf("readyz %d", rec.Code)
	}
	e.cluster.ready, e.cluster.reason = false, "no raft leader"
	rec := e.do("GET", "/readyz", nil)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz not ready: %d", rec.Code)
	}
	if msgs := errorsOf(t, rec); !strings.Contains(msgs[0], "no raft leader") {
		t.Fatalf("reason missing: %v", msgs)
	}
}

func TestMetricsUseRouteTemplates(t *testing.T) {
	e := newEnv(t, nil)
	e.do("GET", "/admin/prefixes/one", nil, "Authorization", "Bearer "+testAdminToken)
	e.do("GET", "/admin/prefixes/two", nil, "Authorization", "Bearer "+testAdminToken)
	e.do("GET", "/secret/path/123", nil)
	if got := requestCount(t, e, "/admin/prefixes/{prefix}", "GET", "404"); got != 2 {
		t.Fatalf("templated route counted %v", got)
	}
	if got := requestCount(t, e, routeUnmatched, "GET", "404"); got != 1 {
		t.Fatalf("unmatched counted %v", got)
	}
	rec := e.do("GET", "/metrics", nil)
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, "presence_http_request_duration_seconds_bucket") {
		t.Fatalf("metrics %d:\n%s", rec.Code, body)
	}
	if strings.Contains(body, "/secret/path") || strings.Contains(body, "/admin/prefixes/one") {
		t.Fatal("a raw URL became a label")
	}
}

func TestMetricsRegistryShared(t *testing.T) {
	e := newEnv(t, nil)
	// A second handler on the same registry reuses the collectors.
	if _, err := New(Config{Service: e.svc, Prefixes: e.prefixes, Cluster: e.cluster,
		JWTSecrets: [][]byte{[]byte("s")}, AdminToken: "a", Registry: e.registry}); err != nil {
		t.Fatalf("second New on one registry: %v", err)
	}
}

// requestCount reads presence_http_requests_total{route,method,status}.
func requestCount(t *testing.T, e *env, route, method, status string) float64 {
	t.Helper()
	families, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"route": route, "method": method, "status": status}
	for _, f := range families {
		if f.GetName() != "presence_http_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if maps.Equal(got, want) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestCORS(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	pre := e.do("OPTIONS", "/presence/update", nil, "Origin", "https://app.example",
		"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	h := pre.Header()
	if pre.Code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Last-Event-ID") ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight %d %v", pre.Code, h)
	}
	rec := e.do("GET", getQuery([]string{"/a/b"}), nil, "Origin", "https://app.example")
	if rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "Retry-After") {
		t.Fatalf("simple request headers %v", rec.Header())
	}
	for _, r := range []*http.Response{
		e.do("GET", getQuery([]string{"/a/b"}), nil, "Origin", "https://evil.example").Result(),
		e.do("OPTIONS", "/presence/update", nil, "Origin", "https://evil.example", "Access-Control-Request-Method", "POST").Result(),
	} {
		if r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("foreign origin allowed: %v", r.Header)
		}
	}

	star := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"*"} })
	rec = star.do("OPTIONS", "/presence/subscribe", nil, "Origin", "http://localhost:3000", "Access-Control-Request-Method", "GET")
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "http://localhost:3000" {
		t.Fatalf("wildcard preflight %d %v", rec.Code, rec.Header())
	}
}

// TestCachePolicy: answers to GET are never stored and depend on Origin;
// answers to POST, PUT and DELETE, which no cache stores, carry neither.
func TestCachePolicy(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	auth := bearerHeader(userToken(t, "7"))
	cases := []struct {
		name        string
		rec         *httptest.ResponseRecorder
		cache, vary string
	}{
		{"get", e.do("GET", getQuery([]string{"/a/b"}), nil, "Origin", "https://app.example"), "no-store", "Origin"},
		{"get refused", e.do("GET", "/presence/get", nil), "no-store", "Origin"},
		{"head", e.do("HEAD", "/admin/prefixes", nil), "no-store", "Origin"},
		{"update", e.do("POST", "/presence/update", strings.NewReader(`{"client_id":"c1","present_channels":["/a/b"]}`),
			"Authorization", auth, "Content-Type", "application/json", "Origin", "https://app.example"), "", ""},
		{"update refused", e.do("POST", "/presence/update", strings.NewReader(`{}`), "Content-Type", "application/json"), "", ""},
		{"admin put refused", e.do("PUT", "/admin/prefixes/demo", strings.NewReader(`{}`)), "", ""},
	}
	for _, c := range cases {
		h := c.rec.Header()
		if got := h.Get("Cache-Control"); got != c.cache {
			t.Errorf("%s (%d): Cache-Control %q, want %q", c.name, c.rec.Code, got, c.cache)
		}
		if got := strings.Join(h.Values("Vary"), ","); got != c.vary {
			t.Errorf("%s (%d): Vary %q, want %q", c.name, c.rec.Code, got, c.vary)
		}
	}
}

func TestDevEndpoints(t *testing.T) {
	demo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("demo " + r.URL.Path))
	})
	client := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("client " + r.URL.Path)) })
	e := newEnv(t, func(c *Config) { c.Dev = true; c.Demo = demo; c.Client = client })

	rec := e.do("GET", "/dev/token?user=7&username=sam&name=Sam%20S&groups=staff,,mods", nil)
	var got devTokenJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("token: %d %s", rec.Code, rec.Body.String())
	}
	want := presence.User{ID: "7", Username: "sam", Name: "Sam S", Groups: []string{"staff", "mods"}}
	if got.User == nil || got.User.ID != want.ID || got.User.Name != want.Name || strings.Join(got.User.Groups, ",") != "staff,mods" {
		t.Fatalf("user %+v", got.User)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(got.Token, claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
		jwt.WithTimeFunc(e.clock.Now)); err != nil {
		t.Fatalf("minted token: %v", err)
	}
	if exp, _ := claims.GetExpirationTime(); exp == nil || !exp.Equal(testStart.Add(24*time.Hour)) {
		t.Fatalf("exp %v, want 24 h after now", exp)
	}
	// The minted token works on the API.
	rec = e.do("POST", "/presence/update", strings.NewReader(`{"client_id":"c"}`), "Content-Type", "application/json", "Authorization", "Bearer "+got.Token)
	if rec.Code != http.StatusOK || e.svc.updateCalls()[0].User.Username != "sam" {
		t.Fatalf("update with dev token: %d", rec.Code)
	}

	if rec = e.do("GET", "/dev/cluster", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"leader":"n1"`) {
		t.Fatalf("dev cluster %d %s", rec.Code, rec.Body.String())
	}
	if rec = e.do("GET", "/dev/owner?channel=/a/b", nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"owner":"n1"`) {
		t.Fatalf("dev owner %d %s", rec.Code, rec.Body.String())
	}
	for target, body := range map[string]string{"/": "demo /", "/demo.css": "demo /demo.css",
		"/presence-client.js": "client /presence-client.js", "/presence-client.d.ts": "client /presence-client.d.ts"} {
		if rec = e.do("GET", target, nil); rec.Code != http.StatusOK || rec.Body.String() != body {
			t.Fatalf("%s: %d %q", target, rec.Code, rec.Body.String())
		}
	}
	// The demo's own 404 becomes the API's JSON 404.
	if rec = e.do("GET", "/missing", nil); rec.Code != http.StatusNotFound {
		t.Fatalf("missing demo path: %d", rec.Code)
	}
	errorsOf(t, rec)
	// The demo's catch-all does not hide wrong methods of API routes.
	if rec = e.do("DELETE", "/presence/get", nil); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE /presence/get in dev mode: %d", rec.Code)
	}
}
