package redispresence

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/bench/token"
)

// userClaims are a user token's claims, those the node reads: sub must be a
// string of 1..MaxUserIDBytes bytes. It must hold no space either: a
// client's member in Discourse's sorted set is "user_id client_id", and the
// expiry script finds the user as what precedes the first space (Discourse's
// user ids are integers).
type userClaims struct {
	token.Claims
}

// Validate is called by the parser after the registered-claim checks.
func (c *userClaims) Validate() error {
	if c.Subject == "" || len(c.Subject) > MaxUserIDBytes {
		return fmt.Errorf("sub must be a string of 1..%d bytes", MaxUserIDBytes)
	}
	if strings.Contains(c.Subject, " ") {
		return errors.New("sub must not contain a space")
	}
	return nil
}

// authenticator verifies HS256 user tokens, remembering those that verified.
type authenticator struct {
	secret []byte
	now    func() time.Time
	parser *jwt.Parser
	cache  *tokenCache // nil: no cache
}

func newAuthenticator(cfg *Config) *authenticator {
	a := &authenticator{
		secret: cfg.JWTSecret,
		now:    cfg.Now,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithTimeFunc(cfg.Now)),
	}
	if cfg.TokenCacheSize > 0 {
		a.cache = newTokenCache(cfg.TokenCacheSize)
	}
	return a
}

// userID returns the user of the request's bearer token: ErrForbidden
// without an Authorization header (anonymous callers cannot be present),
// ErrUnauthorized for a bad one.
func (a *authenticator) userID(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", fmt.Errorf("%w: sign in to update presence", ErrForbidden)
	}
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", fmt.Errorf("%w: expected a Bearer token", ErrUnauthorized)
	}
	return a.verify(tok)
}

// verify checks a token's signature and claims, or finds it in the cache.
func (a *authenticator) verify(tok string) (string, error) {
	now := a.now()
	if a.cache != nil {
		if id, ok := a.cache.get(tok, now); ok {
			return id, nil
		}
	}
	claims := &userClaims{}
	if _, err := a.parser.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return a.secret, nil }); err != nil {
		return "", fmt.Errorf("%w: invalid token: %v", ErrUnauthorized, err)
	}
	if a.cache != nil {
		e := cachedToken{userID: claims.Subject}
		if claims.ExpiresAt != nil {
			e.expiresAt = claims.ExpiresAt.Time
		}
		if claims.NotBefore != nil {
			e.notBefore = claims.NotBefore.Time
		}
		a.cache.put(strings.Clone(tok), e)
	}
	return claims.Subject, nil
}
