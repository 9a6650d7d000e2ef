package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

// userClaims are the JWT claims of a user token. The registered claims bring
// exp and nbf; sub decodes into a string, so a numeric sub fails to parse.
type userClaims struct {
	jwt.RegisteredClaims
	Groups         []string `json:"groups,omitempty"`
	Username       string   `json:"username,omitempty"`
	Name           string   `json:"name,omitempty"`
	AvatarTemplate string   `json:"avatar_template,omitempty"`
}

// Validate enforces the contract on sub; the parser calls it after the
// registered-claim checks.
func (c *userClaims) Validate() error {
	if c.Subject == "" || len(c.Subject) > presence.MaxUserIDBytes {
		return fmt.Errorf("sub must be a string of 1..%d bytes", presence.MaxUserIDBytes)
	}
	return nil
}

// user converts verified claims to the identity handed to the Service.
func (c *userClaims) user() *presence.User {
	return &presence.User{
		ID:             c.Subject,
		Username:       c.Username,
		Name:           c.Name,
		AvatarTemplate: c.AvatarTemplate,
		Groups:         c.Groups,
	}
}

// authenticator verifies and mints HS256 user tokens.
type authenticator struct {
	secret []byte
	clock  clock.Clock
	parser *jwt.Parser
	cache  *tokenCache
}

func newAuthenticator(secret []byte, clk clock.Clock) *authenticator {
	return &authenticator{
		secret: secret,
		clock:  clk,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithTimeFunc(clk.Now)),
		cache: newTokenCache(tokenCacheCapacity),
	}
}

// verify returns the identity of a valid token; any failure is an
// ErrUnauthorized. A token that verified before is answered from the cache
// while its exp and nbf allow it.
func (a *authenticator) verify(token string) (*presence.User, error) {
	now := a.clock.Now()
	if u, ok := a.cache.get(token, now); ok {
		return u, nil
	}
	claims := &userClaims{}
	_, err := a.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		// WithValidMethods already pins HS256; this guards the key type too.
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
			return nil, errors.New("unexpected signing method")
		}
		return a.secret, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: invalid token: %v", presence.ErrUnauthorized, err)
	}
	u := claims.user()
	e := &cachedToken{user: u}
	if claims.ExpiresAt != nil {
		e.expiresAt = claims.ExpiresAt.Time
	}
	if claims.NotBefore != nil {
		e.notBefore = claims.NotBefore.Time
	}
	a.cache.put(strings.Clone(token), e, now)
	return u, nil
}

// mint signs a token for u valid for ttl (dev mode).
func (a *authenticator) mint(u *presence.User, ttl time.Duration) (string, error) {
	now := a.clock.Now()
	claims := &userClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   u.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Groups:         u.Groups,
		Username:       u.Username,
		Name:           u.Name,
		AvatarTemplate: u.AvatarTemplate,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.secret)
}

// identify returns the caller's identity: nil (anonymous) without an
// Authorization header, an ErrUnauthorized for a bad one. allowQuery also
// accepts ?token= because EventSource cannot set headers.
func (a *authenticator) identify(r *http.Request, allowQuery bool) (*presence.User, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		token, ok := bearer(h)
		if !ok {
			return nil, fmt.Errorf("%w: expected a Bearer token", presence.ErrUnauthorized)
		}
		return a.verify(token)
	}
	if allowQuery {
		if token := r.URL.Query().Get("token"); token != "" {
			return a.verify(token)
		}
	}
	return nil, nil
}

// bearer extracts the token of an "Authorization: Bearer <token>" value.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// adminAuthorized compares the bearer token with the admin token in constant
// time; hashing first keeps the length of the secret from leaking too.
func adminAuthorized(r *http.Request, adminToken string) bool {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	got := sha256.Sum256([]byte(token))
	want := sha256.Sum256([]byte(adminToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// admin guards an admin handler with the admin token.
func (s *server) admin(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminAuthorized(r, s.cfg.AdminToken) {
			s.writeError(w, r, fmt.Errorf("%w: admin token required", presence.ErrUnauthorized))
			return
		}
		next(w, r)
	})
}
