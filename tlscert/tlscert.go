// Package tlscert makes and loads the TLS files of presence nodes: a
// private certificate authority, certificates it signs for nodes (usable
// by a node both as a server and as a client, for mutual TLS between
// nodes, and for the public HTTPS API), and a key pair served from files
// that can be reloaded while the node runs.
//
// Keys are ECDSA P-256: every TLS 1.2 and 1.3 stack, browsers included,
// accepts them, and they are small and fast. Files are PEM: certificates
// as CERTIFICATE blocks, private keys as PKCS #8 PRIVATE KEY blocks,
// written readable by their owner only.
package tlscert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Defaults of the files the tls subcommands write.
const (
	// DefaultCAValidity is the lifetime of a new CA (five years, as
	// consul tls ca): long, since replacing it means reissuing every node
	// certificate.
	DefaultCAValidity = 5 * 365 * 24 * time.Hour
	// DefaultCertValidity is the lifetime of a node certificate.
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultCACommonName names a new CA.
	DefaultCACommonName = "Presence Cluster CA"
	// CAFile and CAKeyFile are the file names tls ca writes.
	CAFile    = "presence-ca.pem"
	CAKeyFile = "presence-ca-key.pem"
	// backdate starts validity a little before now, for clocks of other
	// machines that run slightly behind.
	backdate = 5 * time.Minute
	// maxNameBytes bounds a DNS name (RFC 1035).
	maxNameBytes = 253
)

// ErrInvalid marks unusable input: a bad name, host or validity, or files
// that are not a CA and its key.
var ErrInvalid = errors.New("tlscert: invalid input")

// CAOptions describe a new certificate authority. Zero values take the
// documented defaults.
type CAOptions struct {
	// CommonName names the CA. "": DefaultCACommonName.
	CommonName string
	// Validity is the CA's lifetime. 0: DefaultCAValidity.
	Validity time.Duration
	// Now is the start of validity. Zero: the current time.
	Now time.Time
}

// CertOptions describe a node certificate.
type CertOptions struct {
	// Name is the node's name (--name); it becomes the subject's common
	// name and a DNS name of the certificate, so it must be a valid DNS
	// name: letters, digits, '-', '_' and '.' separated labels.
	Name string
	// Hosts are further DNS names or IP addresses the node is reached at
	// (its --advertise host, a load balancer's name for HTTPS).
	Hosts []string
	// CACert and CAKey are the PEM files of the signing CA.
	CACert, CAKey []byte
	// Validity is the certificate's lifetime; it must end before the CA's.
	// 0: DefaultCertValidity.
	Validity time.Duration
	// Now is the start of validity. Zero: the current time.
	Now time.Time
}

// NewCA creates a certificate authority; it returns the PEM of its
// certificate and of its private key. The CA may sign only leaf
// certificates (path length 0).
func NewCA(opts CAOptions) (certPEM, keyPEM []byte, err error) {
	if opts.CommonName == "" {
		opts.CommonName = DefaultCACommonName
	}
	validity, err := positive(opts.Validity, DefaultCAValidity)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: generate key: %w", err)
	}
	start := startOf(opts.Now)
	tpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: opts.CommonName},
		NotBefore:             start.Add(-backdate),
		NotAfter:              start.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	if tpl.SerialNumber, err = serialNumber(); err != nil {
		return nil, nil, err
	}
	// Self-signed: Go derives the subject key id for a CA.
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: create CA certificate: %w", err)
	}
	return encode(der, key)
}

// NewCert creates a node certificate signed by the CA of opts, valid for
// server and client authentication; it returns the PEM of the certificate
// and of its private key.
func NewCert(opts CertOptions) (certPEM, keyPEM []byte, err error) {
	if err := validName(opts.Name); err != nil {
		return nil, nil, err
	}
	if strings.HasPrefix(opts.Name, "*") {
		return nil, nil, fmt.Errorf("%w: a node name cannot be a wildcard", ErrInvalid)
	}
	validity, err := positive(opts.Validity, DefaultCertValidity)
	if err != nil {
		return nil, nil, err
	}
	ca, caKey, err := ParseCA(opts.CACert, opts.CAKey)
	if err != nil {
		return nil, nil, err
	}
	start := startOf(opts.Now)
	tpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: opts.Name},
		NotBefore:             start.Add(-backdate),
		NotAfter:              start.Add(validity),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if err := addHosts(tpl, append([]string{opts.Name}, opts.Hosts...)); err != nil {
		return nil, nil, err
	}
	if tpl.NotAfter.After(ca.NotAfter) {
		return nil, nil, fmt.Errorf("%w: the certificate would outlive its CA, which expires %s; choose a shorter validity or a newer CA",
			ErrInvalid, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	if tpl.SerialNumber, err = serialNumber(); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: sign certificate: %w", err)
	}
	return encode(der, key)
}

// ParseCA reads a CA certificate and its private key from PEM, checking
// that the certificate may sign others and that the key is its own.
func ParseCA(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%w: the CA file holds no PEM CERTIFICATE", ErrInvalid)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: CA certificate: %v", ErrInvalid, err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("%w: the CA file's certificate is not a certificate authority", ErrInvalid)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("%w: the CA key does not belong to the CA certificate", ErrInvalid)
	}
	return ca, key, nil
}

// parsePrivateKey reads a PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) key.
func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: the CA key file holds no PEM block", ErrInvalid)
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: the CA key file holds a %q block, not a private key", ErrInvalid, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: CA key: %v", ErrInvalid, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: the CA key cannot sign", ErrInvalid)
	}
	return signer, nil
}

// addHosts puts each host in the certificate as an IP address or a DNS
// name, once.
func addHosts(tpl *x509.Certificate, hosts []string) error {
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" || seen[strings.ToLower(h)] {
			continue
		}
		seen[strings.ToLower(h)] = true
		if ip := net.ParseIP(h); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
			continue
		}
		if err := validName(h); err != nil {
			return err
		}
		tpl.DNSNames = append(tpl.DNSNames, h)
	}
	return nil
}

// validName accepts DNS names: labels of letters, digits, '-' and '_'
// (which some node names use) separated by dots, a leading "*." for a
// wildcard. It also keeps names usable as file names.
func validName(name string) error {
	if name == "" || len(name) > maxNameBytes {
		return fmt.Errorf("%w: a name must be 1..%d bytes", ErrInvalid, maxNameBytes)
	}
	labels := strings.Split(strings.TrimPrefix(name, "*."), ".")
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: %q is not a DNS name", ErrInvalid, name)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: %q is not a DNS name (letters, digits, '-', '_' and dots)", ErrInvalid, name)
			}
		}
	}
	return nil
}

func positive(v, def time.Duration) (time.Duration, error) {
	switch {
	case v == 0:
		return def, nil
	case v < 0:
		return 0, fmt.Errorf("%w: validity must be positive", ErrInvalid)
	}
	return v, nil
}

func startOf(now time.Time) time.Time {
	if now.IsZero() {
		return time.Now()
	}
	return now
}

// serialNumber draws a random positive 128-bit serial, as CAs must make
// serials unpredictable.
func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("tlscert: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlscert: encode key: %w", err)
	}
	var c, k bytes.Buffer
	_ = pem.Encode(&c, &pem.Block{Type: "CERTIFICATE", Bytes: der}) // writing to a buffer cannot fail
	_ = pem.Encode(&k, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return c.Bytes(), k.Bytes(), nil
}
