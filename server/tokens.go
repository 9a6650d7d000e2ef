package server

import (
	"fmt"
	"os"

	"github.com/presencehq/presence/jwtkeys"
)

// loadTokenKeys reads the public key files and sets up the remote key set
// of user tokens. A file that does not hold usable public keys is a
// configuration error: the node must not start accepting fewer tokens
// than the operator meant, or keys they did not mean.
func (s *Server) loadTokenKeys() error {
	for i, secret := range s.cfg.JWTSecrets {
		if len(secret) < minJWTSecretBytes {
			// Not refused: deployments with short secrets exist, and a
			// node that stops starting is worse than a warning.
			s.log.Warn("a JWT secret is shorter than 32 bytes; HS256 needs at least 32 random bytes (RFC 7518)",
				"secret_index", i, "length", len(secret))
		}
	}
	for _, path := range s.cfg.JWTPublicKeyFiles {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%w: --jwt-public-keys: %v", ErrConfig, err)
		}
		keys, err := jwtkeys.ParsePEM(data)
		if err != nil {
			return fmt.Errorf("%w: --jwt-public-keys: %s: %v", ErrConfig, path, err)
		}
		s.jwtKeys = append(s.jwtKeys, keys...)
	}
	if s.cfg.JWKSURL == "" {
		return nil
	}
	remote, err := jwtkeys.NewRemote(jwtkeys.RemoteConfig{URL: s.cfg.JWKSURL, Clock: s.cfg.Clock, Logger: s.log})
	if err != nil {
		return fmt.Errorf("%w: --jwks-url: %v", ErrConfig, err)
	}
	s.jwks = remote
	return nil
}

// minJWTSecretBytes is the HS256 key size RFC 7518 section 3.2 asks for.
const minJWTSecretBytes = 32

// prefetchJWKS fetches the remote key set once at start, so that the first
// tokens do not wait for it. A failure is logged by the key set, and
// tokens fetch it again (at most every 10 s) until it succeeds. It ends
// on its own within the fetch timeout, so shutdown does not wait for it.
func (s *Server) prefetchJWKS() {
	_ = s.jwks.Refresh()
}
