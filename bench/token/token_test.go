package token

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestMintVerifiesWithTheSecret(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m, err := NewMinter("s3cret", time.Hour, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(User{ID: "42", Username: "sam", Name: "Sam", Groups: []string{"staff"}})
	if err != nil {
		t.Fatal(err)
	}
	var got Claims
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
	if _, err := parser.ParseWithClaims(tok, &got, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil }); err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if got.Subject != "42" || got.Username != "sam" || got.Name != "Sam" || len(got.Groups) != 1 {
		t.Errorf("claims %+v", got)
	}
	if !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("exp %v, want %v", got.ExpiresAt, now.Add(time.Hour))
	}
	if _, err := parser.ParseWithClaims(tok, &Claims{}, func(*jwt.Token) (any, error) { return []byte("other"), nil }); err == nil {
		t.Error("token verified with the wrong secret")
	}
}

func TestSubIsAJSONString(t *testing.T) {
	m, err := NewMinter("k", 0, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(User{ID: "7"})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(payload, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["sub"] != "7" {
		t.Errorf("sub = %#v, want the string \"7\"", raw["sub"])
	}
	if _, ok := raw["exp"]; ok {
		t.Error("ttl 0 must mint a token without exp")
	}
}

func TestEmptySecretRefused(t *testing.T) {
	if _, err := NewMinter("", time.Hour, time.Now); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("err = %v, want ErrNoSecret", err)
	}
}
