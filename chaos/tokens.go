package chaos

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// ErrNoSecret is returned by NewTokens for an empty secret.
var ErrNoSecret = errors.New("chaos: empty jwt secret")

// Identity is a simulated user as its token describes it.
type Identity struct {
	ID       string // sub claim
	Username string
	Name     string
}

// Tokens mints HS256 user tokens the nodes accept. It is safe for
// concurrent use.
type Tokens struct {
	secret []byte
}

// NewTokens returns a minter for the cluster's jwt secret.
func NewTokens(secret string) (*Tokens, error) {
	if secret == "" {
		return nil, ErrNoSecret
	}
	return &Tokens{secret: []byte(secret)}, nil
}

// tokenClaims are the claims a node reads; no exp, so a token outlives any
// test run.
type tokenClaims struct {
	jwt.RegisteredClaims
	Username string `json:"username,omitempty"`
	Name     string `json:"name,omitempty"`
}

// Mint signs a token for u.
func (t *Tokens) Mint(u Identity) (string, error) {
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: u.ID},
		Username:         u.Username,
		Name:             u.Name,
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.secret)
	if err != nil {
		return "", fmt.Errorf("chaos: sign token for %q: %w", u.ID, err)
	}
	return s, nil
}
