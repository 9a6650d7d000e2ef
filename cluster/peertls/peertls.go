// Package peertls builds the TLS configurations of node-to-node
// connections from PEM files: the node's certificate and private key
// (ECDSA or Ed25519, as `presence-node tls cert` writes them) and the
// cluster's CA certificates. Both sides of a connection present their
// certificate; each verifies the other's chain to one of the CAs and its
// extended key usage (server authentication for the node dialled, client
// authentication for the dialler). TLS 1.3 only.
//
// Host names are not verified: the CA is the cluster's own, and every
// certificate it signs is a node of the cluster (as Consul's servers with
// verify_server_hostname off, and etcd's peers without allowed names).
// The transport dials members by address, and addresses change (pods,
// restarts), while what matters is that the peer holds a certificate of
// the cluster. So do not use a public CA, or one shared with other
// services, for --tls-ca.
//
// Reload reads the files again (on SIGHUP): new connections use the new
// certificate and CAs, established ones keep theirs.
package peertls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// ErrInvalid marks files that cannot serve: unreadable, not PEM, a key
// that does not match, or a certificate the CA does not vouch for as a
// node.
var ErrInvalid = errors.New("peertls: invalid certificate files")

// Files names the PEM files of a node.
type Files struct {
	Cert string // the node's certificate, optionally followed by intermediates
	Key  string // its private key
	CA   string // one or more CA certificates (several while rotating the CA)
}

// Material is a node's certificate and trusted CAs, swapped as a whole by
// Reload. It is safe for concurrent use.
type Material struct {
	files   Files
	current atomic.Pointer[state]
}

// state is one loaded set of files.
type state struct {
	cert   *tls.Certificate
	roots  *x509.CertPool
	server *tls.Config // served to each dialler, see ServerConfig
}

// Load reads and checks the files: the certificate must chain to one of
// the CAs, be valid now, and allow both server and client authentication.
func Load(files Files) (*Material, error) {
	m := &Material{files: files}
	if err := m.Reload(); err != nil {
		return nil, err
	}
	return m, nil
}

// Reload reads the files again. On error the previous certificate and CAs
// stay in use, so a half-written renewal never takes a node offline.
func (m *Material) Reload() error {
	st, err := load(m.files, time.Now())
	if err != nil {
		return err
	}
	m.current.Store(st)
	return nil
}

// Certificate returns the node's current certificate, parsed.
func (m *Material) Certificate() *x509.Certificate { return m.current.Load().cert.Leaf }

func load(files Files, now time.Time) (*state, error) {
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s and %s: %w", ErrInvalid, files.Cert, files.Key, err)
	}
	caPEM, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrInvalid, files.CA)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, files.Cert, err)
		}
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := cert.Leaf.Verify(opts); err != nil {
			return nil, fmt.Errorf("%w: %s is not a node certificate of the CA in %s (it needs server and client authentication): %w",
				ErrInvalid, files.Cert, files.CA, err)
		}
	}
	st := &state{cert: &cert, roots: roots}
	st.server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
	}
	return st, nil
}

// ServerConfig returns the configuration of accepted connections: TLS 1.3,
// a client certificate required and verified against the current CAs.
func (m *Material) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		// The current files, read per connection so that Reload applies.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return m.current.Load().server, nil
		},
	}
}

// ClientConfig returns the configuration of dialled connections: TLS 1.3,
// the current certificate presented, the peer's chain verified against the
// current CAs (VerifyConnection; see the package documentation for why
// its host name is not).
func (m *Material) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.current.Load().cert, nil
		},
		// Skips only the default verification, which would require a host
		// name; VerifyConnection verifies the chain and usage instead.
		InsecureSkipVerify: true,
		VerifyConnection:   m.verifyServer,
	}
}

// verifyServer verifies the dialled node's certificate chain and usage.
func (m *Material) verifyServer(cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return errors.New("peertls: the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         m.current.Load().roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}
