package api

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

const formCT = "application/x-www-form-urlencoded"

// beaconForm is a form body as navigator.sendBeacon sends it, with the
// token as a field.
func beaconForm(tok string, leave ...string) string {
	v := url.Values{"client_id": {"tab-1"}, "leave_channels[]": leave}
	if tok != "" {
		v.Set("token", tok)
	}
	return v.Encode()
}

func TestBeaconTokenFieldAuthenticates(t *testing.T) {
	e := newEnv(t, nil)
	tok := userToken(t, "7")
	multi, multiCT := multipartBody(t, map[string][]string{"client_id": {"tab-1"}, "leave_channels[]": {"/a/b"}, "token": {tok}})
	for _, tc := range []struct{ name, ct, body string }{
		{"form", formCT, beaconForm(tok, "/a/b")},
		{"multipart", multiCT, multi.String()},
		{"text/plain form, a Blob's type", "text/plain;charset=UTF-8", beaconForm(tok, "/a/b")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.svc.updateCalls())
			rec := e.do("POST", "/presence/update", strings.NewReader(tc.body), "Content-Type", tc.ct)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}
			calls := e.svc.updateCalls()
			if len(calls) != before+1 {
				t.Fatalf("%d service calls, want 1", len(calls)-before)
			}
			if c := calls[before]; c.User.ID != "7" || c.ClientID != "tab-1" || !slices.Equal(c.Leave, []string{"/a/b"}) {
				t.Fatalf("call %+v (user %+v)", c, c.User)
			}
		})
	}
}

func TestBeaconTokenFieldHasTheHeadersChecks(t *testing.T) {
	exp := testStart.Add(time.Hour).Unix()
	wrongSecret, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "7", "exp": exp}).
		SignedString([]byte("another secret"))
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"expired":       token(t, jwt.MapClaims{"sub": "7", "exp": testStart.Add(-time.Second).Unix()}),
		"not yet valid": token(t, jwt.MapClaims{"sub": "7", "nbf": testStart.Add(time.Minute).Unix()}),
		"bad signature": wrongSecret,
		"numeric sub":   token(t, jwt.MapClaims{"sub": 7, "exp": exp}),
		"malformed":     "not-a-jwt",
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			rec := e.do("POST", "/presence/update", strings.NewReader(beaconForm(tok, "/a/b")), "Content-Type", formCT)
			if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatalf("status %d (WWW-Authenticate %q), want 401", rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(rec.Body.String(), tok) {
				t.Fatalf("the answer echoes the token: %s", rec.Body.String())
			}
			if n := len(e.svc.updateCalls()); n != 0 {
				t.Fatalf("%d calls reached the service", n)
			}
		})
	}
}

// TestBeaconHeaderWinsOverTokenField: with an Authorization header the
// field is not read, as ?token= on the subscribe endpoint.
func TestBeaconHeaderWinsOverTokenField(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do("POST", "/presence/update", strings.NewReader(beaconForm("garbage", "/a/b")),
		"Content-Type", formCT, "Authorization", bearerHeader(userToken(t, "9")))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	if calls := e.svc.updateCalls(); len(calls) != 1 || calls[0].User.ID != "9" {
		t.Fatalf("calls %+v", calls)
	}
}

// TestBeaconTokenIsNeverLogged drives the paths that log a request (an
// unknown service error, a 503) with the token in the body.
func TestBeaconTokenIsNeverLogged(t *testing.T) {
	logger, logs := testkit.CapturedLogger()
	e := newEnv(t, func(c *Config) { c.Logger = logger })
	tok := userToken(t, "7")
	for _, err := range []error{errors.New("disk on fire"), presence.ErrUnavailable} {
		e.svc.mu.Lock()
		e.svc.err = err
		e.svc.mu.Unlock()
		rec := e.do("POST", "/presence/update", strings.NewReader(beaconForm(tok, "/a/b")), "Content-Type", formCT)
		if rec.Code < 500 {
			t.Fatalf("%v: status %d", err, rec.Code)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "disk on fire") {
		t.Fatalf("the failure was not logged at all: %q", out)
	}
	if strings.Contains(out, tok) || strings.Contains(out, strings.Split(tok, ".")[2]) {
		t.Fatalf("the token reached the log: %q", out)
	}
}

// TestLongLeaveListsReachTheService: up to 500 leave channels are accepted
// and handed to the Service in one call, in order.
func TestLongLeaveListsReachTheService(t *testing.T) {
	e := newEnv(t, nil)
	leave := channelList(presence.MaxLeaveChannels)
	body := `{"client_id":"c","present_channels":["/p/1"],"leave_channels":` + jsonList(leave) + `}`
	rec := e.do("POST", "/presence/update", strings.NewReader(body),
		"Content-Type", "application/json", "Authorization", bearerHeader(userToken(t, "7")))
	if rec.Code != http.StatusOK || rec.Body.String() != `{"/p/1":true}`+"\n" {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	calls := e.svc.updateCalls()
	if len(calls) != 1 {
		t.Fatalf("%d service calls, want 1", len(calls))
	}
	c := calls[0]
	if c.ClientID != "c" || c.User.ID != "7" || !slices.Equal(c.Channels, []string{"/p/1"}) {
		t.Fatalf("call: client %q, user %q, present %v", c.ClientID, c.User.ID, c.Channels)
	}
	if !slices.Equal(c.Leave, leave) {
		t.Fatal("the leaves did not reach the service in order")
	}
}

// TestBeaconLeavesEveryChannelOnTheEngine: a page going away leaves 500
// channels with one beacon carrying its token; the channel listed last is
// left too.
func TestBeaconLeavesEveryChannelOnTheEngine(t *testing.T) {
	l := newLive(t, nil)
	if code, res := l.update(specUser, `{"client_id":"tab-1","present_channels":["`+ch1+`"]}`); code != http.StatusOK || !res[ch1] {
		t.Fatalf("enter: %d %v", code, res)
	}
	l.wantIDs(ch1, specUser.ID)
	leave := append(channelList(presence.MaxLeaveChannels-1), ch1)
	tok := strings.TrimPrefix(as(t, specUser), "Bearer ")
	code, body := l.do("POST", "/presence/update", beaconForm(tok, leave...), "", "Content-Type", formCT)
	if code != http.StatusOK || body != "{}\n" {
		t.Fatalf("beacon: %d %s", code, body)
	}
	l.wantIDs(ch1)
}
