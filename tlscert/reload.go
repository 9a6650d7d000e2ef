package tlscert

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// KeyPair serves a certificate and key loaded from files, and loads them
// again on Reload (on SIGHUP, say), so a renewed certificate takes effect
// without a restart. Connections already established keep the certificate
// of their handshake. A KeyPair is safe for concurrent use.
type KeyPair struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
}

// LoadKeyPair loads a PEM certificate (chain) and its private key.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	kp := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := kp.Reload(); err != nil {
		return nil, err
	}
	return kp, nil
}

// Reload reads the files again. On any error the previous certificate
// stays in use, so a half-written renewal never takes a node offline.
func (kp *KeyPair) Reload() error {
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("tlscert: load %s and %s: %w", kp.certFile, kp.keyFile, err)
	}
	kp.current.Store(&cert)
	return nil
}

// Certificate returns the certificate in use; its Leaf is parsed.
func (kp *KeyPair) Certificate() *tls.Certificate { return kp.current.Load() }

// GetCertificate serves the current certificate to TLS clients
// (tls.Config.GetCertificate).
func (kp *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return kp.current.Load(), nil
}

// GetClientCertificate presents the current certificate to TLS servers
// that ask for one (tls.Config.GetClientCertificate), for mutual TLS.
func (kp *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return kp.current.Load(), nil
}
