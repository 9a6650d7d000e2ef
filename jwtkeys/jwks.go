package jwtkeys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
)

// Bounds of a JWK Set document.
const (
	MaxJWKSBytes = 1 << 20 // the document
	MaxJWKSKeys  = 100     // keys kept from one document
	maxRSAExp    = 1<<31 - 1
	maxRSABits   = 16384 // larger moduli only cost CPU per verification
)

// jwk holds the members of a JSON Web Key this package reads.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	Crv    string   `json:"crv"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// ParseJWKS reads a JWK Set, {"keys": [...]}. As RFC 7517 section 5 asks,
// keys this package cannot use are skipped rather than failing the set:
// other key types, curves or algorithms, encryption keys ("use": "enc",
// or "key_ops" without "verify"), keys with missing or malformed members
// and weak keys. A document that is not a JWK Set is an error; a set
// without a usable key is not (an identity provider may be between keys),
// the caller sees no keys. At most MaxJWKSKeys keys are kept.
func ParseJWKS(data []byte) ([]Key, error) {
	if len(data) > MaxJWKSBytes {
		return nil, fmt.Errorf("%w: JWK Set larger than %d bytes", ErrInvalid, MaxJWKSBytes)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: not a JWK Set: %v", ErrInvalid, err)
	}
	if doc.Keys == nil {
		return nil, fmt.Errorf("%w: not a JWK Set: no \"keys\" array", ErrInvalid)
	}
	var keys []Key
	for _, raw := range doc.Keys {
		var k jwk
		if json.Unmarshal(raw, &k) != nil {
			continue // a member of the wrong type: not a key we can use
		}
		key, ok := k.key()
		if !ok {
			continue
		}
		if keys = append(keys, key); len(keys) == MaxJWKSKeys {
			break
		}
	}
	return keys, nil
}

// key converts a JWK to a verification key; false when it is not one this
// package can use for signatures.
func (k *jwk) key() (Key, bool) {
	if k.Use != "" && k.Use != "sig" || k.KeyOps != nil && !slices.Contains(k.KeyOps, "verify") {
		return Key{}, false
	}
	var alg string
	var pub any
	switch k.Kty {
	case "RSA":
		alg, pub = RS256, k.rsa()
	case "EC":
		alg, pub = ES256, k.ec()
	case "OKP":
		alg, pub = EdDSA, k.okp()
	default:
		return Key{}, false
	}
	if pub == nil || k.Alg != "" && k.Alg != alg {
		return Key{}, false
	}
	key, err := newKey(k.Kid, pub)
	return key, err == nil
}

func (k *jwk) rsa() any {
	n, okN := decodeB64(k.N)
	e, okE := decodeB64(k.E)
	if !okN || !okE || len(e) == 0 || len(e) > 4 || len(n) == 0 || len(n)*8 > maxRSABits+8 {
		return nil
	}
	exp := new(big.Int).SetBytes(e)
	if exp.Int64() < 3 || exp.Int64() > maxRSAExp || exp.Bit(0) == 0 {
		return nil
	}
	modulus := new(big.Int).SetBytes(n)
	if modulus.BitLen() > maxRSABits {
		return nil
	}
	return &rsa.PublicKey{N: modulus, E: int(exp.Int64())}
}

func (k *jwk) ec() any {
	if k.Crv != "P-256" {
		return nil
	}
	x, okX := decodeB64(k.X)
	y, okY := decodeB64(k.Y)
	if !okX || !okY || len(x) != 32 || len(y) != 32 {
		return nil
	}
	// Parsing the uncompressed point checks that it is on the curve.
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil
	}
	return pub
}

func (k *jwk) okp() any {
	if k.Crv != "Ed25519" {
		return nil
	}
	x, ok := decodeB64(k.X)
	if !ok || len(x) != ed25519.PublicKeySize {
		return nil
	}
	return ed25519.PublicKey(x)
}

// decodeB64 decodes base64url without padding, as JWKs encode numbers and
// points; padded input is tolerated, as some providers send it.
func decodeB64(s string) ([]byte, bool) {
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, true
	}
	b, err := base64.URLEncoding.DecodeString(s)
	return b, err == nil
}
