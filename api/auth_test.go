package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/presence"
)

// rawToken builds a token by hand so that its header can lie.
func rawToken(t *testing.T, header, claims map[string]any, sign func(signingInput string) []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign(input))
}

func hmacSign(secret string) func(string) []byte {
	return func(input string) []byte {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(input))
		return m.Sum(nil)
	}
}

func TestTokenFailuresAre401(t *testing.T) {
	exp := testStart.Add(time.Hour).Unix()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs256, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "7", "exp": exp}).SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "7", "exp": exp}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "7", "exp": exp}).
		SignedString([]byte("another secret"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"bad signature":  wrongSecret,
		"tampered":       tamper(token(t, jwt.MapClaims{"sub": "7", "exp": exp})),
		"expired":        token(t, jwt.MapClaims{"sub": "7", "exp": testStart.Add(-time.Second).Unix()}),
		"nbf in future":  token(t, jwt.MapClaims{"sub": "7", "nbf": testStart.Add(time.Minute).Unix()}),
		"alg none":       none,
		"RS256 signed":   rs256,
		"RS256 header":   rawToken(t, map[string]any{"alg": "RS256", "typ": "JWT"}, map[string]any{"sub": "7"}, hmacSign(testSecret)),
		"HS512":          rawToken(t, map[string]any{"alg": "HS512", "typ": "JWT"}, map[string]any{"sub": "7"}, hmacSign(testSecret)),
		"numeric sub":    token(t, jwt.MapClaims{"sub": 7, "exp": exp}),
		"missing sub":    token(t, jwt.MapClaims{"exp": exp}),
		"empty sub":      token(t, jwt.MapClaims{"sub": "", "exp": exp}),
		"sub too long":   token(t, jwt.MapClaims{"sub": strings.Repeat("s", presence.MaxUserIDBytes+1), "exp": exp}),
		"groups string":  token(t, jwt.MapClaims{"sub": "7", "groups": "staff"}),
		"groups numbers": token(t, jwt.MapClaims{"sub": "7", "groups": []int{1}}),
		"malformed":      "not-a-jwt",
		"two parts":      "a.b",
		"bad base64":     "a!.b!.c!",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			rec := e.do("GET", getQuery([]string{"/a/b"}), nil, "Authorization", bearerHeader(tok))
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", rec.Code, rec.Body.String())
			}
			errorsOf(t, rec)
			if rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			rec = e.do("GET", subscribeQuery(`{"/a/b":1}`)+"&token="+tok, nil)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("subscribe ?token=: status %d, want 401", rec.Code)
			}
			if len(e.svc.getCalls()) != 0 {
				t.Fatal("the service was called")
			}
		})
	}
}

// tamper flips a character of the payload, keeping the signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	claims = []byte(strings.Replace(string(claims), `"7"`, `"8"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(claims)
	return strings.Join(parts, ".")
}

func TestGoodTokenIdentityReachesService(t *testing.T) {
	e := newEnv(t, nil)
	tok := token(t, jwt.MapClaims{
		"sub": "42", "username": "sam", "name": "Sam", "avatar_template": "/a/{size}.png",
		"groups": []string{"staff", "mods"},
		"exp":    testStart.Add(time.Minute).Unix(), "nbf": testStart.Add(-time.Minute).Unix(),
	})
	rec := e.do("GET", getQuery([]string{"/a/b"}), nil, "Authorization", bearerHeader(tok))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	want := &presence.User{ID: "42", Username: "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png", Groups: []string{"staff", "mods"}}
	if got := e.svc.getCalls()[0].User; !reflect.DeepEqual(got, want) {
		t.Fatalf("user %+v, want %+v", got, want)
	}

	// The same token expires by the injected clock.
	e.clock.Advance(2 * time.Minute)
	if rec := e.do("GET", getQuery([]string{"/a/b"}), nil, "Authorization", bearerHeader(tok)); rec.Code != http.StatusUnauthorized {
		t.Fatalf("after expiry: status %d", rec.Code)
	}
}

func TestAnonymousGetHasNoIdentity(t *testing.T) {
	e := newEnv(t, nil)
	if rec := e.do("GET", getQuery([]string{"/a/b"}), nil); rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if u := e.svc.getCalls()[0].User; !u.Anonymous() {
		t.Fatalf("anonymous caller got identity %+v", u)
	}
}

func TestSubscribeTokenQueryAndHeader(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	s := srv.open(subscribeQuery(`{"/a/b":-1}`)+"&token="+userToken(t, "9"), nil)
	s.close()
	_, _, u := e.svc.subscription(0)
	if u == nil || u.ID != "9" {
		t.Fatalf("subscriber %+v, want user 9", u)
	}
	s = srv.open(subscribeQuery(`{"/a/b":-1}`), map[string]string{"Authorization": bearerHeader(userToken(t, "10"))})
	s.close()
	if _, _, u := e.svc.subscription(1); u == nil || u.ID != "10" {
		t.Fatalf("subscriber %+v, want user 10", u)
	}
}

func TestAdminTokenAccepted(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do("GET", "/admin/prefixes", nil, "Authorization", "Bearer "+testAdminToken)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	// A prefix of the admin token is not the admin token.
	rec = e.do("GET", "/admin/prefixes", nil, "Authorization", "Bearer "+testAdminToken[:5])
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d", rec.Code)
	}
}
