package jwtkeys

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// MaxPEMBytes bounds a PEM file of public keys.
const MaxPEMBytes = 1 << 20

// ParsePEM reads every public key of a PEM file: PUBLIC KEY (PKIX) and
// RSA PUBLIC KEY (PKCS #1) blocks, and the public key of CERTIFICATE
// blocks (an identity provider often publishes its signing certificate;
// only the key is used, its validity is not checked). Anything else, a
// private key above all, is an error, as is a file without a key.
func ParsePEM(data []byte) ([]Key, error) {
	if len(data) > MaxPEMBytes {
		return nil, fmt.Errorf("%w: PEM file larger than %d bytes", ErrInvalid, MaxPEMBytes)
	}
	var keys []Key
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		key, err := parseBlock(block)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", len(keys)+1, err)
		}
		keys = append(keys, key)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data after the last PEM block, or not PEM", ErrInvalid)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no PEM public key", ErrInvalid)
	}
	return keys, nil
}

func parseBlock(block *pem.Block) (Key, error) {
	var pub any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	default:
		// Never echo the block: it may be a private key put here by mistake.
		return Key{}, fmt.Errorf("%w: a %q block is not a public key", ErrInvalid, block.Type)
	}
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return newKey("", pub)
}
