package jwtkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKeys are generated once: RSA key generation is slow under -race.
var testKeys = sync.OnceValue(func() struct {
	rsa     *rsa.PrivateKey
	rsaWeak *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	ec384   *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
} {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	// 1024-bit keys are refused by this package, and by crypto/rsa's
	// generator unless asked through GODEBUG; build one from primes.
	weak := weakRSAKey()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	return struct {
		rsa     *rsa.PrivateKey
		rsaWeak *rsa.PrivateKey
		ec      *ecdsa.PrivateKey
		ec384   *ecdsa.PrivateKey
		ed      ed25519.PrivateKey
	}{r, weak, ec, ec384, ed}
})

// weakRSAKey returns a public-only 1024-bit RSA key (enough to test that
// it is refused).
func weakRSAKey() *rsa.PrivateKey {
	n := new(big.Int).Lsh(big.NewInt(1), 1023)
	n.Add(n, big.NewInt(1))
	return &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 65537}}
}

func pemBlock(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func pubPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PUBLIC KEY", der)
}

func selfSigned(t *testing.T, key crypto.Signer) string {
	t.Helper()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(-time.Minute)} // expired: only the key is used
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

func TestParsePEM(t *testing.T) {
	k := testKeys()
	data := pubPEM(t, &k.rsa.PublicKey) + pubPEM(t, &k.ec.PublicKey) + pubPEM(t, k.ed.Public()) +
		pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)) + selfSigned(t, k.ec)
	keys, err := ParsePEM([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{RS256, ES256, EdDSA, RS256, ES256}
	if len(keys) != len(want) {
		t.Fatalf("%d keys, want %d", len(keys), len(want))
	}
	for i, key := range keys {
		if key.Alg != want[i] || key.ID != "" {
			t.Fatalf("key %d: %s %q, want %s", i, key.Alg, key.ID, want[i])
		}
	}
	if !keys[0].Public.(*rsa.PublicKey).Equal(&k.rsa.PublicKey) || !keys[4].Public.(*ecdsa.PublicKey).Equal(&k.ec.PublicKey) {
		t.Fatal("keys changed in parsing")
	}
}

func TestParsePEMRejects(t *testing.T) {
	k := testKeys()
	ecPriv, err := x509.MarshalPKCS8PrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"empty":           "",
		"not PEM":         "hello",
		"trailing data":   pubPEM(t, &k.ec.PublicKey) + "junk",
		"private key":     pemBlock("PRIVATE KEY", ecPriv),
		"weak RSA":        pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsaWeak.PublicKey)),
		"P-384":           pubPEM(t, &k.ec384.PublicKey),
		"broken DER":      pemBlock("PUBLIC KEY", []byte{0x30, 0x01}),
		"too large":       strings.Repeat(" ", MaxPEMBytes+1),
		"good then wrong": pubPEM(t, &k.ec.PublicKey) + pemBlock("EC PRIVATE KEY", []byte{1}),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			keys, err := ParsePEM([]byte(data))
			if !errors.Is(err, ErrInvalid) || keys != nil {
				t.Fatalf("keys %v, err %v; want ErrInvalid", keys, err)
			}
			if name == "private key" && strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(ecPriv)[:20]) {
				t.Fatal("the error echoes the private key")
			}
		})
	}
}

// jwkOf renders a public key as a JWK with the given extra members.
func jwkOf(t testing.TB, kid string, pub crypto.PublicKey, extra map[string]any) map[string]any {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	m := map[string]any{"kid": kid}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		raw, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		m["kty"], m["crv"], m["x"], m["y"] = "EC", k.Curve.Params().Name, b64(raw[1:33]), b64(raw[33:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", b64(k)
	default:
		t.Fatalf("no JWK for %T", pub)
	}
	for name, v := range extra {
		if v == nil {
			delete(m, name)
		} else {
			m[name] = v
		}
	}
	return m
}

func jwksDoc(t testing.TB, keys ...map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseJWKS(t *testing.T) {
	k := testKeys()
	doc := jwksDoc(t,
		jwkOf(t, "r1", &k.rsa.PublicKey, map[string]any{"alg": "RS256", "use": "sig"}),
		jwkOf(t, "e1", &k.ec.PublicKey, nil),
		jwkOf(t, "d1", k.ed.Public(), map[string]any{"key_ops": []string{"verify"}}),
		// Skipped, as RFC 7517 asks of keys an implementation cannot use:
		jwkOf(t, "enc", &k.rsa.PublicKey, map[string]any{"use": "enc"}),
		jwkOf(t, "ops", &k.ec.PublicKey, map[string]any{"key_ops": []string{"encrypt"}}),
		jwkOf(t, "ps", &k.rsa.PublicKey, map[string]any{"alg": "PS256"}),
		jwkOf(t, "wrongalg", &k.ec.PublicKey, map[string]any{"alg": "RS256"}),
		jwkOf(t, "p384", &k.ec384.PublicKey, nil),
		jwkOf(t, "weak", &k.rsaWeak.PublicKey, nil),
		jwkOf(t, "offcurve", &k.ec.PublicKey, map[string]any{"y": base64.RawURLEncoding.EncodeToString(make([]byte, 32))}),
		jwkOf(t, "short", k.ed.Public(), map[string]any{"x": "AAAA"}),
		jwkOf(t, "badb64", &k.rsa.PublicKey, map[string]any{"n": "!!!"}),
		jwkOf(t, "evenexp", &k.rsa.PublicKey, map[string]any{"e": "AQAA"}),
		jwkOf(t, "nokty", &k.ec.PublicKey, map[string]any{"kty": nil}),
		map[string]any{"kty": "oct", "k": "c2VjcmV0"}, // a symmetric key must never become a verification key
		map[string]any{"kty": 7},
	)
	keys, err := ParseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, key := range keys {
		got = append(got, key.ID+":"+key.Alg)
	}
	if strings.Join(got, " ") != "r1:RS256 e1:ES256 d1:EdDSA" {
		t.Fatalf("keys %v", got)
	}
	if empty, err := ParseJWKS([]byte(`{"keys": []}`)); err != nil || len(empty) != 0 {
		t.Fatalf("empty set: %v %v", empty, err)
	}
	for _, bad := range []string{``, `[]`, `{}`, `{"keys": null}`, `{"keys": {}}`, `{"keys": [`, `null`} {
		if _, err := ParseJWKS([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%q: err %v, want ErrInvalid", bad, err)
		}
	}
	many := make([]map[string]any, MaxJWKSKeys+5)
	for i := range many {
		many[i] = jwkOf(t, "k", &k.ec.PublicKey, nil)
	}
	if keys, err := ParseJWKS(jwksDoc(t, many...)); err != nil || len(keys) != MaxJWKSKeys {
		t.Fatalf("%d keys, %v; want the first %d", len(keys), err, MaxJWKSKeys)
	}
}
