// Package jwtkeys holds the public keys that verify user tokens signed by
// an identity provider instead of a shared secret: keys read from PEM
// files, and JSON Web Key Sets (RFC 7517) fetched from a URL, cached and
// refreshed when a token names a key the set does not hold, at most once
// per MinRefreshInterval.
//
// Every Key verifies exactly one algorithm: RS256 (RSA, at least 2048
// bits), ES256 (ECDSA P-256) or EdDSA (Ed25519). Tying the algorithm to
// the key, never to the token's header, is what keeps a token from
// choosing how it is checked.
package jwtkeys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
)

// Algorithms (JWS "alg" values) a Key may verify.
const (
	RS256 = "RS256"
	ES256 = "ES256"
	EdDSA = "EdDSA"
)

// MinRSABits is the smallest RSA modulus accepted (NIST SP 800-131A).
const MinRSABits = 2048

// ErrInvalid marks key material that cannot be used.
var ErrInvalid = errors.New("jwtkeys: invalid key")

// Key is one verification key.
type Key struct {
	// ID is the JWK "kid"; "" for keys read from PEM files.
	ID string
	// Alg is the only algorithm the key verifies: RS256, ES256 or EdDSA.
	Alg string
	// Public is an *rsa.PublicKey (RS256), an *ecdsa.PublicKey on P-256
	// (ES256) or an ed25519.PublicKey (EdDSA).
	Public crypto.PublicKey
}

// newKey checks that pub is strong enough and returns it as a Key of the
// algorithm its type implies.
func newKey(id string, pub crypto.PublicKey) (Key, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return Key{}, fmt.Errorf("%w: RSA key of %d bits (at least %d)", ErrInvalid, k.N.BitLen(), MinRSABits)
		}
		return Key{ID: id, Alg: RS256, Public: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%w: ECDSA key on %s (ES256 needs P-256)", ErrInvalid, k.Curve.Params().Name)
		}
		return Key{ID: id, Alg: ES256, Public: k}, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return Key{}, fmt.Errorf("%w: Ed25519 key of %d bytes", ErrInvalid, len(k))
		}
		return Key{ID: id, Alg: EdDSA, Public: k}, nil
	}
	return Key{}, fmt.Errorf("%w: unsupported key type %T (RSA, ECDSA P-256 or Ed25519)", ErrInvalid, pub)
}

// equal reports whether two keys are the same key for the same use.
func (k Key) equal(o Key) bool {
	if k.ID != o.ID || k.Alg != o.Alg {
		return false
	}
	pub, ok := k.Public.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(o.Public)
}
