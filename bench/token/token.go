// Package token mints the HS256 user tokens a presence node accepts: sub is
// the user id as a JSON string, with username, name and optional groups and
// avatar_template claims.
package token

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrNoSecret is returned by NewMinter for an empty secret.
var ErrNoSecret = errors.New("token: empty secret")

// Claims are the fields a presence node reads from a user token.
type Claims struct {
	jwt.RegisteredClaims
	Groups         []string `json:"groups,omitempty"`
	Username       string   `json:"username,omitempty"`
	Name           string   `json:"name,omitempty"`
	AvatarTemplate string   `json:"avatar_template,omitempty"`
}

// User is the identity put into a token.
type User struct {
	ID             string
	Username       string
	Name           string
	AvatarTemplate string
	Groups         []string
}

// Minter signs tokens with one secret. It is safe for concurrent use.
type Minter struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewMinter returns a Minter whose tokens expire ttl after now(); a ttl of
// zero mints tokens without exp.
func NewMinter(secret string, ttl time.Duration, now func() time.Time) (*Minter, error) {
	if secret == "" {
		return nil, ErrNoSecret
	}
	return &Minter{secret: []byte(secret), ttl: ttl, now: now}, nil
}

// Mint returns a signed token for u.
func (m *Minter) Mint(u User) (string, error) {
	now := m.now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: u.ID, IssuedAt: jwt.NewNumericDate(now)},
		Groups:           u.Groups,
		Username:         u.Username,
		Name:             u.Name,
		AvatarTemplate:   u.AvatarTemplate,
	}
	if m.ttl > 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(m.ttl))
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(m.secret)
}
