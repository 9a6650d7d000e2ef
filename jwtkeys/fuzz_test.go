package jwtkeys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

// checkKeys fails unless every key is one this package promises: an
// algorithm it supports, of the matching type and strength.
func checkKeys(t *testing.T, keys []Key) {
	t.Helper()
	for i, k := range keys {
		ok := false
		switch pub := k.Public.(type) {
		case *rsa.PublicKey:
			ok = k.Alg == RS256 && pub.N.BitLen() >= MinRSABits && pub.E >= 3 && pub.E%2 == 1
		case *ecdsa.PublicKey:
			_, err := pub.Bytes() // fails for a point not on the curve
			ok = k.Alg == ES256 && pub.Curve == elliptic.P256() && err == nil
		case ed25519.PublicKey:
			ok = k.Alg == EdDSA && len(pub) == ed25519.PublicKeySize
		}
		if !ok {
			t.Fatalf("key %d: %s %T is not a key this package should return", i, k.Alg, k.Public)
		}
	}
}

// typedJWKs put a value of every JSON type, nested ones included, in
// every member of a JWK.
func typedJWKs(t testing.TB, base map[string]any) [][]byte {
	values := []any{nil, true, 0, -1.5, "", "sig", "AQAB", []any{}, []any{nil}, []any{"verify", 1},
		[]any{[]any{}}, map[string]any{}, map[string]any{"a": nil}}
	var out [][]byte
	for _, member := range []string{"kty", "kid", "use", "key_ops", "alg", "crv", "n", "e", "x", "y"} {
		for _, v := range values {
			jwk := map[string]any{}
			for k, bv := range base {
				jwk[k] = bv
			}
			jwk[member] = v
			doc, err := json.Marshal(map[string]any{"keys": []any{jwk}})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, doc)
		}
	}
	for _, v := range values {
		doc, _ := json.Marshal(map[string]any{"keys": v})
		out = append(out, doc, []byte(fmt.Sprintf(`{"keys": [%s]}`, mustJSON(v))))
	}
	return out
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func FuzzParseJWKS(f *testing.F) {
	k := testKeys()
	ec := jwkOf(f, "e1", &k.ec.PublicKey, nil)
	f.Add(jwksDoc(f, jwkOf(f, "r1", &k.rsa.PublicKey, map[string]any{"alg": "RS256"}), ec, jwkOf(f, "d1", k.ed.Public(), nil)))
	for _, doc := range typedJWKs(f, ec) {
		f.Add(doc)
	}
	for _, s := range []string{``, `{}`, `{"keys": []}`, `{"keys": null}`, `[]`, `{"keys": [{"kty": "oct", "k": "AA"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseJWKS(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || keys != nil {
				t.Fatalf("error %v (keys %v)", err, keys)
			}
			return
		}
		if len(keys) > MaxJWKSKeys {
			t.Fatalf("%d keys", len(keys))
		}
		checkKeys(t, keys)
	})
}

func FuzzParsePEM(f *testing.F) {
	k := testKeys()
	der, err := x509.MarshalPKIXPublicKey(&k.ec.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	edDER, err := x509.MarshalPKIXPublicKey(k.ed.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(pemBlock("PUBLIC KEY", der) + pemBlock("PUBLIC KEY", edDER)))
	f.Add([]byte(pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey))))
	f.Add([]byte(pemBlock("CERTIFICATE", der)))
	f.Add([]byte(pemBlock("PRIVATE KEY", der)))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n\n-----END PUBLIC KEY-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParsePEM(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || keys != nil {
				t.Fatalf("error %v (keys %v)", err, keys)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("no keys and no error")
		}
		checkKeys(t, keys)
	})
}
