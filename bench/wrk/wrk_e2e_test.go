package wrk

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/bench/token"
)

// TestScriptUnderWrk runs the generated script with the real wrk (skipped
// when wrk is not installed) against a server that checks every call's
// token and body: every user must be heard, with its own body, and the
// RESULT line must parse.
func TestScriptUnderWrk(t *testing.T) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("skipping: wrk is not installed (Debian: apt-get install wrk)")
	}
	const users = 50
	var mu sync.Mutex
	heard := map[string]string{} // user -> body
	bad := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var claims token.Claims
		raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return []byte("s"), nil })
		var body struct {
			ClientID string   `json:"client_id"`
			Present  []string `json:"present_channels"`
		}
		derr := json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || derr != nil || r.Method != http.MethodPost || r.URL.Path != DefaultPath ||
			r.Header.Get("Content-Type") != "application/json" {
			bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		heard[claims.Subject] = body.ClientID + " " + strings.Join(body.Present, ",")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()

	script, err := Generate(GenConfig{Users: users, Channels: 7, RunID: "w", JWTSecret: "s"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-t2", "-c4", "-d1s", "--latency", "-s", script, srv.URL+"/", "--", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	run, err := ParseRun(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if bad > 0 || run.Errors() > 0 || run.Requests < users {
		t.Fatalf("%d bad calls, %+v\n%s", bad, run.Result, out)
	}
	if len(heard) != users {
		t.Errorf("heard %d users, want %d", len(heard), users)
	}
	for u := range users {
		id := "w-u" + itoa(u)
		if want := "w-c" + itoa(u) + " /demo/hb/" + itoa(u%7); heard[id] != want {
			t.Errorf("user %s sent %q, want %q", id, heard[id], want)
		}
	}
}
