package wrk

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/bench/token"
)

func TestRequestsHeartbeatOneChannelEachWithTheirUsersToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	reqs, err := Requests(GenConfig{Users: 25, Channels: 10, RunID: "r1", JWTSecret: "s", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 25 {
		t.Fatalf("%d requests, want 25", len(reqs))
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
	for u, r := range reqs {
		var claims token.Claims
		if _, err := parser.ParseWithClaims(r.Token, &claims, func(*jwt.Token) (any, error) { return []byte("s"), nil }); err != nil {
			t.Fatalf("user %d: token does not verify: %v", u, err)
		}
		if want := "r1-u" + itoa(u); claims.Subject != want {
			t.Errorf("user %d: sub %q, want %q", u, claims.Subject, want)
		}
		if claims.ExpiresAt == nil || !claims.ExpiresAt.Equal(now.Add(DefaultTokenTTL)) {
			t.Errorf("user %d: exp %v", u, claims.ExpiresAt)
		}
		var body struct {
			ClientID string   `json:"client_id"`
			Present  []string `json:"present_channels"`
			Leave    []string `json:"leave_channels"`
		}
		if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
			t.Fatalf("user %d: body %q: %v", u, r.Body, err)
		}
		if body.ClientID != "r1-c"+itoa(u) || len(body.Present) != 1 || body.Present[0] != "/demo/hb/"+itoa(u%10) || body.Leave != nil {
			t.Errorf("user %d: body %q", u, r.Body)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestGenerateWritesTheRequestsAndAScriptReadingThem(t *testing.T) {
	dir := t.TempDir()
	script, err := Generate(GenConfig{Users: 7, Channels: 3, JWTSecret: "s"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if script != filepath.Join(dir, ScriptFile) {
		t.Errorf("script path %q", script)
	}
	f, err := os.Open(filepath.Join(dir, RequestsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		tok, body, ok := strings.Cut(sc.Text(), "\t")
		if !ok || strings.Count(tok, ".") != 2 || !json.Valid([]byte(body)) || strings.ContainsAny(body, "\t") {
			t.Errorf("line %d: %q", lines+1, sc.Text())
		}
		lines++
	}
	if lines != 7 {
		t.Errorf("%d lines, want 7", lines)
	}
	lua, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`local requests_file = "` + filepath.Join(dir, RequestsFile) + `"`,
		`local path = "/presence/update"`,
		`function setup(thread)`, `function init(args)`, `function request()`, `function done(summary, latency, requests)`,
		`if line_no % threads == id then`,
		`"RESULT requests=%d duration_us=%d`,
	} {
		if !strings.Contains(string(lua), want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if strings.Contains(string(lua), "@") {
		t.Error("a placeholder was left in the script")
	}
}

func TestScriptQuotesPaths(t *testing.T) {
	lua := Script(`/tmp/a "b"\c.tsv`, "/p")
	if !strings.Contains(lua, `local requests_file = "/tmp/a \"b\"\\c.tsv"`) {
		t.Errorf("path not quoted for Lua:\n%s", lua[:400])
	}
}

func TestGenConfigRejects(t *testing.T) {
	for _, cfg := range []GenConfig{
		{},                                       // no secret
		{JWTSecret: "s", Users: -1},              // no users
		{JWTSecret: "s", RunID: "a b"},           // space in the ids
		{JWTSecret: "s", Prefix: "/demo/\t"},     // tab in the file
		{JWTSecret: "s", TokenTTL: -time.Second}, // expired tokens
	} {
		if _, err := Requests(cfg); !errors.Is(err, ErrGen) {
			t.Errorf("Requests(%+v) = %v, want ErrGen", cfg, err)
		}
	}
}

const sampleRun = `# server: node
# round: 2
# load: 0.15 0.30 0.45
# cpu_seconds: 6.5
# client_cpu_seconds: 3.25
Running 10s test @ http://127.0.0.1:28190/presence/update
  2 threads and 64 connections
  Latency Distribution
     99%   35.20ms
  304260 requests in 10.00s, 45.10MB read
Requests/sec:  30426.00
RESULT requests=304260 duration_us=10000000 non2xx=3 connect_errors=0 read_errors=1 write_errors=0 timeouts=2 p50_us=1500 p90_us=9000 p99_us=35200 p999_us=52000 max_us=80000
`

func TestParseRun(t *testing.T) {
	r, err := ParseRun(strings.NewReader(sampleRun))
	if err != nil {
		t.Fatal(err)
	}
	want := Run{
		Server: "node", Round: 2, LoadAvg: [3]float64{0.15, 0.30, 0.45}, CPU: 6500 * time.Millisecond, ClientCPU: 3250 * time.Millisecond,
		Result: Result{
			Requests: 304260, Duration: 10 * time.Second, Non2xx: 3, ReadErrors: 1, Timeouts: 2,
			P50: 1500 * time.Microsecond, P90: 9 * time.Millisecond, P99: 35200 * time.Microsecond,
			P999: 52 * time.Millisecond, Max: 80 * time.Millisecond,
		},
	}
	if r != want {
		t.Errorf("ParseRun =\n%+v\nwant\n%+v", r, want)
	}
	if r.Rate() != 30426 || r.Errors() != 6 {
		t.Errorf("rate %v, errors %d", r.Rate(), r.Errors())
	}
	if got := r.CPUPerRequest(); got < 21*time.Microsecond || got > 22*time.Microsecond {
		t.Errorf("CPU per request %v, want about 21.4µs", got)
	}
}

func TestParseRunFailures(t *testing.T) {
	if _, err := ParseRun(strings.NewReader("unable to connect to 127.0.0.1:1 Connection refused\n")); !errors.Is(err, ErrNoResult) {
		t.Errorf("no RESULT: err = %v", err)
	}
	for _, bad := range []string{
		"RESULT requests=x duration_us=1",
		"RESULT requests=1",
		"# load: 0.1\nRESULT " + strings.SplitN(sampleRun, "RESULT ", 2)[1],
	} {
		if _, err := ParseRun(strings.NewReader(bad)); err == nil || errors.Is(err, ErrNoResult) {
			t.Errorf("ParseRun(%q) = %v, want a parse error", bad, err)
		}
	}
}

func run(server string, round int, rate float64, p99 time.Duration) Run {
	return Run{Server: server, Round: round, Result: Result{
		Requests: int64(rate * 10), Duration: 10 * time.Second, P99: p99,
	}}
}

func TestReportRatiosAgainstTheTargets(t *testing.T) {
	runs := []Run{
		{Server: "bare", Round: 0, Result: Result{Requests: 1, Duration: time.Second}}, // warm-up: not reported
		run("bare", 1, 40000, 10*time.Millisecond), run("node", 1, 30000, 30*time.Millisecond), run("redis", 1, 15000, 14*time.Millisecond),
		run("node", 2, 38000, 12*time.Millisecond), run("redis", 2, 20000, 16*time.Millisecond), run("bare", 2, 40000, 10*time.Millisecond),
	}
	runs[2].Non2xx = 5 // node, round 1
	var b strings.Builder
	if err := Report(&b, runs, ReportConfig{Baseline: "bare", Subject: "node"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"node / bare req/s: 0.75, 0.95; means 34,000 / 40,000 = 0.85 (target >= 0.90: missed)",
		"node / bare p99:   3.00, 1.20; means 21.0 ms / 10.0 ms = 2.10 (target <= 1.50: missed)",
		"node / redis req/s: 2.00, 1.90; means 34,000 / 17,500 = 1.94\n",
		"node round 1: 5 non-2xx",
		"34,000  30,000–38,000",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n") < 10 || strings.Contains(out, "  0  bare") {
		t.Errorf("report:\n%s", out)
	}
}

func TestReportMet(t *testing.T) {
	runs := []Run{run("bare", 1, 40000, 10*time.Millisecond), run("node", 1, 39000, 12*time.Millisecond)}
	var b strings.Builder
	if err := Report(&b, runs, ReportConfig{Baseline: "bare", Subject: "node"}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), ": met)") != 2 || strings.Contains(b.String(), "WARNING") {
		t.Errorf("report:\n%s", b.String())
	}
}

func TestReportRejectsDuplicatesAndNothing(t *testing.T) {
	if err := Report(&strings.Builder{}, nil, ReportConfig{}); err == nil {
		t.Error("an empty report was accepted")
	}
	runs := []Run{run("bare", 1, 1, time.Millisecond), run("bare", 1, 1, time.Millisecond)}
	if err := Report(&strings.Builder{}, runs, ReportConfig{}); err == nil {
		t.Error("two runs of one server in one round were accepted")
	}
}

func TestReportExplainsTheRateByCPU(t *testing.T) {
	bare, node := run("bare", 1, 40000, 10*time.Millisecond), run("node", 1, 32000, 15*time.Millisecond)
	// 10 s runs: bare 20 µs + wrk 10 µs a request, node 25 µs + 10 µs.
	bare.CPU, bare.ClientCPU = 8*time.Second, 4*time.Second
	node.CPU, node.ClientCPU = 8*time.Second, 3200*time.Millisecond
	var b strings.Builder
	if err := Report(&b, []Run{bare, node}, ReportConfig{Baseline: "bare", Subject: "node"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"server + wrk (the cores are shared): bare 20.0 µs + 10.0 µs, node 25.0 µs + 10.0 µs;",
		// (20+10)/(25+10); the budget is (20+10)/0.9 - 10.
		"rate ratio they predict: 0.86; for 0.90x, node may spend at most 23.3 µs per request (it spends 25.0 µs)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestReportWithoutClientCPUSaysNothingOfIt(t *testing.T) {
	runs := []Run{run("bare", 1, 40000, 10*time.Millisecond), run("node", 1, 39000, 12*time.Millisecond)}
	runs[0].CPU, runs[1].CPU = time.Second, time.Second
	var b strings.Builder
	if err := Report(&b, runs, ReportConfig{Baseline: "bare", Subject: "node"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "predict") {
		t.Errorf("a bound without wrk's CPU:\n%s", b.String())
	}
}
