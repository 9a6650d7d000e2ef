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
	"github.com/presencehq/presence/jwtkeys"
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

// tokenKeys are the keys that verify user tokens, each tied to the one
// algorithm it verifies: HS256 secrets, public keys from PEM files and a
// remote JWK Set.
type tokenKeys struct {
	secrets [][]byte
	public  []jwtkeys.Key
	jwks    *jwtkeys.Remote
}

// algorithms lists the algorithms some key can verify: a token of any
// other algorithm (none, HS512, an RS256 token where only secrets are
// configured) is refused before a key is looked for.
func (k *tokenKeys) algorithms() []string {
	var algs []string
	if len(k.secrets) > 0 {
		algs = append(algs, jwt.SigningMethodHS256.Alg())
	}
	for _, alg := range []string{jwtkeys.RS256, jwtkeys.ES256, jwtkeys.EdDSA} {
		has := k.jwks != nil
		for _, key := range k.public {
			has = has || key.Alg == alg
		}
		if has {
			algs = append(algs, alg)
		}
	}
	return algs
}

// generation changes when the remote set withdraws a key (see
// jwtkeys.Remote.Generation); the other keys change only with a restart.
func (k *tokenKeys) generation() uint64 {
	if k.jwks == nil {
		return 0
	}
	return k.jwks.Generation()
}

// lookup is the parser's key function. The key type follows the token's
// algorithm, which WithValidMethods has checked already: secrets for
// HS256 and only those, public keys of exactly that algorithm otherwise,
// so a token cannot have an RSA public key used as an HMAC secret.
func (k *tokenKeys) lookup(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		keys := make([]jwt.VerificationKey, len(k.secrets))
		for i, s := range k.secrets {
			keys[i] = s
		}
		return jwt.VerificationKeySet{Keys: keys}, nil
	}
	kid := ""
	if v, present := t.Header["kid"]; present {
		s, ok := v.(string)
		if !ok {
			return nil, errors.New("kid is not a string")
		}
		kid = s
	}
	var keys []jwt.VerificationKey
	if k.jwks != nil {
		for _, key := range k.jwks.Lookup(kid, alg) {
			keys = append(keys, key.Public)
		}
	}
	// PEM keys carry no id: they are tried whatever the token's kid.
	for _, key := range k.public {
		if key.Alg == alg {
			keys = append(keys, key.Public)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no %s key with id %q", alg, kid)
	}
	return jwt.VerificationKeySet{Keys: keys}, nil
}

// authenticator verifies user tokens and, in dev mode, mints HS256 ones
// with the first secret.
type authenticator struct {
	keys     tokenKeys
	issuer   string
	audience string
	clock    clock.Clock
	parser   *jwt.Parser
	cache    *tokenCache
}

func newAuthenticator(cfg Config) *authenticator {
	a := &authenticator{
		keys:     tokenKeys{secrets: cfg.JWTSecrets, public: cfg.JWTPublicKeys, jwks: cfg.JWKS},
		issuer:   cfg.JWTIssuer,
		audience: cfg.JWTAudience,
		clock:    cfg.Clock,
		cache:    newTokenCache(cfg.TokenCacheSize),
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(a.keys.algorithms()), jwt.WithTimeFunc(cfg.Clock.Now)}
	if a.issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.issuer))
	}
	if a.audience != "" {
		opts = append(opts, jwt.WithAudience(a.audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a
}

// verify returns the identity of a valid token; any failure is an
// ErrUnauthorized. A token that verified before is answered from the cache
// while its exp and nbf allow it and the remote key set withdrew no key
// since. The cache lives as long as the process: rotating secrets or
// public keys restarts the node (new flags), which starts an empty cache,
// so a token verified by a secret taken out of service is checked again,
// and refused, after the restart.
func (a *authenticator) verify(token string) (*presence.User, error) {
	e, err := a.verified(token)
	if err != nil {
		return nil, err
	}
	return &e.user, nil
}

// verified is verify returning the token's cache entry: its identity and
// its user's rate-limit memo.
func (a *authenticator) verified(token string) (*cachedToken, error) {
	now := a.clock.Now()
	generation := a.keys.generation()
	if e, ok := a.cache.get(token, now, generation); ok {
		return e, nil
	}
	claims := &userClaims{}
	if _, err := a.parser.ParseWithClaims(token, claims, a.keys.lookup); err != nil {
		return nil, fmt.Errorf("%w: invalid token: %v", presence.ErrUnauthorized, err)
	}
	e := newCachedToken(token, claims, generation)
	a.cache.put(e.token, e, now)
	return e, nil
}

// mint signs a token for u valid for ttl (dev mode), with the configured
// issuer and audience so that it verifies.
func (a *authenticator) mint(u *presence.User, ttl time.Duration) (string, error) {
	if len(a.keys.secrets) == 0 {
		return "", errors.New("no JWT secret to sign with")
	}
	now := a.clock.Now()
	claims := &userClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   u.ID,
			Issuer:    a.issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Groups:         u.Groups,
		Username:       u.Username,
		Name:           u.Name,
		AvatarTemplate: u.AvatarTemplate,
	}
	if a.audience != "" {
		claims.Audience = jwt.ClaimStrings{a.audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.keys.secrets[0])
}

// identify returns the caller's identity: nil (anonymous) without an
// Authorization header, an ErrUnauthorized for a bad one. allowQuery also
// accepts ?token= because EventSource cannot set headers.
func (a *authenticator) identify(r *http.Request, allowQuery bool) (*presence.User, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		e, err := a.verifiedHeader(h)
		if err != nil {
			return nil, err
		}
		return &e.user, nil
	}
	if allowQuery {
		if token := r.URL.Query().Get("token"); token != "" {
			return a.verify(token)
		}
	}
	return nil, nil
}

// verifiedHeader returns the cache entry of the token of h, an
// Authorization header's value.
func (a *authenticator) verifiedHeader(h string) (*cachedToken, error) {
	token, ok := bearer(h)
	if !ok {
		return nil, fmt.Errorf("%w: expected a Bearer token", presence.ErrUnauthorized)
	}
	return a.verified(token)
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
