package api

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/jwtkeys"
)

// signers are the asymmetric keys of these tests, generated once (RSA is
// slow under the race detector).
var signers = sync.OnceValue(func() map[string]crypto.Signer {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	_, d, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	e2, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return map[string]crypto.Signer{"RS256": r, "ES256": e, "EdDSA": d, "other-ES256": e2}
})

func signingMethod(alg string) jwt.SigningMethod {
	return map[string]jwt.SigningMethod{
		"RS256": jwt.SigningMethodRS256, "ES256": jwt.SigningMethodES256, "EdDSA": jwt.SigningMethodEdDSA,
		"other-ES256": jwt.SigningMethodES256,
	}[alg]
}

// signed signs claims with key (a signers name), setting kid when not "".
func signed(t *testing.T, key, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(signingMethod(key), claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(signers()[key])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func userClaimsFor(id string) jwt.MapClaims {
	return jwt.MapClaims{"sub": id, "exp": testStart.Add(time.Hour).Unix()}
}

func publicPEM(t *testing.T, key string) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(signers()[key].Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// status answers GET /presence/get with tok as the bearer token.
func (e *env) status(tok string) int {
	e.t.Helper()
	return e.do("GET", getQuery([]string{"/a/b"}), nil, "Authorization", bearerHeader(tok)).Code
}

func hs256(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRotatedOutSecretStopsWorking: during a rotation the nodes run with
// both secrets and accept tokens of either; restarted with the new secret
// only, they refuse tokens of the old one, cached ones included (the cache
// lives as long as the process).
func TestRotatedOutSecretStopsWorking(t *testing.T) {
	const oldSecret, newSecret = "old-secret-0123456789-0123456789", "new-secret-0123456789-0123456789"
	oldTok, newTok := hs256(t, oldSecret, userClaimsFor("7")), hs256(t, newSecret, userClaimsFor("7"))
	during := newEnv(t, func(c *Config) { c.JWTSecrets = [][]byte{[]byte(newSecret), []byte(oldSecret)} })
	for range 2 { // the second time from the cache
		if s1, s2 := during.status(oldTok), during.status(newTok); s1 != 200 || s2 != 200 {
			t.Fatalf("during the rotation: old %d, new %d; want 200 for both", s1, s2)
		}
	}
	after := newEnv(t, func(c *Config) { c.JWTSecrets = [][]byte{[]byte(newSecret)} })
	if s := after.status(oldTok); s != http.StatusUnauthorized {
		t.Fatalf("old secret after the rotation: %d, want 401", s)
	}
	if s := after.status(newTok); s != http.StatusOK {
		t.Fatalf("new secret after the rotation: %d, want 200", s)
	}
}

func TestIssuerAndAudienceChecks(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.JWTIssuer = "https://idp.example"; c.JWTAudience = "presence" })
	exp := testStart.Add(time.Hour).Unix()
	cases := []struct {
		name   string
		claims jwt.MapClaims
		status int
	}{
		{"matching", jwt.MapClaims{"sub": "7", "exp": exp, "iss": "https://idp.example", "aud": "presence"}, 200},
		{"audience in a list", jwt.MapClaims{"sub": "7", "exp": exp, "iss": "https://idp.example", "aud": []string{"mail", "presence"}}, 200},
		{"wrong issuer", jwt.MapClaims{"sub": "7", "exp": exp, "iss": "https://evil.example", "aud": "presence"}, 401},
		{"no issuer", jwt.MapClaims{"sub": "7", "exp": exp, "aud": "presence"}, 401},
		{"wrong audience", jwt.MapClaims{"sub": "7", "exp": exp, "iss": "https://idp.example", "aud": "mail"}, 401},
		{"no audience", jwt.MapClaims{"sub": "7", "exp": exp, "iss": "https://idp.example"}, 401},
		{"audience list without it", jwt.MapClaims{"sub": "7", "exp": exp, "iss": "https://idp.example", "aud": []string{"mail"}}, 401},
		{"expired", jwt.MapClaims{"sub": "7", "exp": testStart.Add(-time.Second).Unix(), "iss": "https://idp.example", "aud": "presence"}, 401},
	}
	for _, tc := range cases {
		if s := e.status(token(t, tc.claims)); s != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, s, tc.status)
		}
	}
}

// TestPublicKeyFilesVerifyTokens: RS256, ES256 and EdDSA tokens verify
// with PEM public keys, and nothing else does: another key, a secret that
// is not configured, the public key used as an HMAC secret.
func TestPublicKeyFilesVerifyTokens(t *testing.T) {
	var pems []byte
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		pems = append(pems, publicPEM(t, alg)...)
	}
	keys, err := jwtkeys.ParsePEM(pems)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.JWTSecrets = nil; c.JWTPublicKeys = keys })
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		rec := e.do("GET", getQuery([]string{"/a/b"}), nil, "Authorization", bearerHeader(signed(t, alg, "any-kid", userClaimsFor(alg))))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", alg, rec.Code, rec.Body.String())
		}
		if calls := e.svc.getCalls(); calls[len(calls)-1].User.ID != alg {
			t.Fatalf("%s: user %+v", alg, calls[len(calls)-1].User)
		}
	}
	hmacWithPublicKey := hs256(t, string(publicPEM(t, "RS256")), userClaimsFor("7"))
	badKid := jwt.NewWithClaims(jwt.SigningMethodES256, userClaimsFor("7"))
	badKid.Header["kid"] = 7
	badKidTok, err := badKid.SignedString(signers()["ES256"])
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"another key":                signed(t, "other-ES256", "", userClaimsFor("7")),
		"HS256 without secrets":      token(t, userClaimsFor("7")),
		"public key as HMAC secret":  hmacWithPublicKey,
		"kid not a string":           badKidTok,
		"expired":                    signed(t, "EdDSA", "", jwt.MapClaims{"sub": "7", "exp": testStart.Add(-time.Second).Unix()}),
		"RS256 header, ES256 signed": swapAlg(t, signed(t, "ES256", "", userClaimsFor("7")), "RS256"),
	} {
		if s := e.status(tok); s != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, s)
		}
	}
}

// swapAlg rewrites a token's header alg, keeping its signature.
func swapAlg(t *testing.T, tok, alg string) string {
	t.Helper()
	header, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	parts := strings.Split(tok, ".")
	return base64.RawURLEncoding.EncodeToString(header) + "." + parts[1] + "." + parts[2]
}

// jwkSet is an identity provider's JWKS endpoint that the test changes.
type jwkSet struct{ *testkit.Endpoint }

func newJWKSet(t *testing.T) *jwkSet {
	return &jwkSet{testkit.NewEndpoint(t, http.StatusOK, []byte(`{"keys": null}`))}
}

// publish replaces the set with the named keys, each under kid = its name.
func (s *jwkSet) publish(names ...string) {
	b64 := base64.RawURLEncoding.EncodeToString
	var keys []map[string]any
	for _, name := range names {
		switch pub := signers()[name].Public().(type) {
		case *rsa.PublicKey:
			keys = append(keys, map[string]any{"kid": name, "kty": "RSA", "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())})
		case *ecdsa.PublicKey:
			raw, _ := pub.Bytes()
			keys = append(keys, map[string]any{"kid": name, "kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])})
		case ed25519.PublicKey:
			keys = append(keys, map[string]any{"kid": name, "kty": "OKP", "crv": "Ed25519", "x": b64(pub)})
		}
	}
	doc, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err) // strings and byte slices always encode
	}
	s.Answer(http.StatusOK, nil, doc)
}

// TestJWKSVerifiesTokensByKid: a JWKS served by the test verifies RS256,
// ES256 and EdDSA tokens by kid; a token naming a key the cached set does
// not hold makes the node fetch the set again, at most once per 10 s of
// the fake clock; a key the provider withdraws stops verifying, also for
// tokens verified (and cached) before.
func TestJWKSVerifiesTokensByKid(t *testing.T) {
	set := newJWKSet(t)
	set.publish("ES256", "RS256")
	var remote *jwtkeys.Remote
	e := newEnv(t, func(c *Config) {
		var err error
		remote, err = jwtkeys.NewRemote(jwtkeys.RemoteConfig{URL: set.URL, Clock: c.Clock})
		if err != nil {
			t.Fatal(err)
		}
		c.JWKS = remote
		c.JWTSecrets = nil
	})
	es256 := signed(t, "ES256", "ES256", userClaimsFor("1"))
	for _, tok := range []string{es256, signed(t, "RS256", "RS256", userClaimsFor("2")), es256} {
		if s := e.status(tok); s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
	}
	if n := set.Requests(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}

	// The provider adds an EdDSA key. Its first token comes less than
	// 10 s after the fetch: refused without a fetch. 10 s later it makes
	// exactly one fetch, and verifies.
	set.publish("ES256", "RS256", "EdDSA")
	eddsa := signed(t, "EdDSA", "EdDSA", userClaimsFor("3"))
	if s := e.status(eddsa); s != http.StatusUnauthorized || set.Requests() != 1 {
		t.Fatalf("new kid within 10 s: status %d after %d fetches", s, set.Requests())
	}
	e.clock.Advance(10 * time.Second)
	if s := e.status(eddsa); s != http.StatusOK || set.Requests() != 2 {
		t.Fatalf("new kid after 10 s: status %d after %d fetches; want 200 after 2", s, set.Requests())
	}
	for range 5 {
		if s := e.status(signed(t, "ES256", "made-up", userClaimsFor("4"))); s != http.StatusUnauthorized {
			t.Fatalf("made-up kid: %d", s)
		}
	}
	if n := set.Requests(); n != 2 {
		t.Fatalf("made-up kids caused %d fetches within 10 s", n-2)
	}
	if s := e.status(signed(t, "other-ES256", "ES256", userClaimsFor("5"))); s != http.StatusUnauthorized {
		t.Fatalf("a token signed by another key under a known kid: %d", s)
	}

	// The provider withdraws the ES256 key: once the set is fetched again,
	// the cached ES256 token is refused.
	set.publish("RS256", "EdDSA")
	e.clock.Advance(10 * time.Second)
	if s := e.status(signed(t, "ES256", "unknown", userClaimsFor("6"))); s != http.StatusUnauthorized {
		t.Fatalf("status %d", s)
	}
	if set.Requests() != 3 || remote.Generation() != 1 {
		t.Fatalf("%d fetches, generation %d", set.Requests(), remote.Generation())
	}
	if s := e.status(es256); s != http.StatusUnauthorized {
		t.Fatalf("a token of a withdrawn key: %d, want 401", s)
	}
	if s := e.status(eddsa); s != http.StatusOK {
		t.Fatalf("a token of a key still published: %d", s)
	}
}

func TestDevTokensCarryIssuerAndAudience(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Dev = true; c.JWTIssuer = "presence-dev"; c.JWTAudience = "presence" })
	rec := e.do("GET", "/dev/token?user=7", nil)
	var body devTokenJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("dev token: %d %s", rec.Code, rec.Body.String())
	}
	if s := e.status(body.Token); s != http.StatusOK {
		t.Fatalf("a dev token does not verify: %d", s)
	}
}
