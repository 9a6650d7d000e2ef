package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
)

func tokenConfig(mutate func(*Config)) Config {
	c := Config{Name: "n1", DataDir: "d", AdminToken: "a", JWTSecrets: []string{"s"}}
	mutate(&c)
	return c
}

func TestValidateTokens(t *testing.T) {
	ok := map[string]func(*Config){
		"one secret":           func(c *Config) {},
		"several secrets":      func(c *Config) { c.JWTSecrets = []string{"new", "old"} },
		"public keys only":     func(c *Config) { c.JWTSecrets = nil; c.JWTPublicKeyFiles = []string{"k.pem"} },
		"https JWKS only":      func(c *Config) { c.JWTSecrets = nil; c.JWKSURL = "https://idp.example/.well-known/jwks.json" },
		"loopback http JWKS":   func(c *Config) { c.JWKSURL = "http://127.0.0.1:8081/jwks" },
		"localhost http JWKS":  func(c *Config) { c.JWKSURL = "http://localhost/jwks" },
		"ipv6 loopback JWKS":   func(c *Config) { c.JWKSURL = "http://[::1]:9/jwks" },
		"dev http JWKS":        func(c *Config) { c.Dev = true; c.JWKSURL = "http://idp:8080/jwks" },
		"dev without a secret": func(c *Config) { c.Dev = true; c.JWTSecrets = nil },
		"service tokens":       func(c *Config) { c.ServiceTokens = []string{"backend-new", "backend-old"} },
	}
	for name, mutate := range ok {
		c := tokenConfig(mutate)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]func(*Config){
		"nothing":          func(c *Config) { c.JWTSecrets = nil },
		"empty secret":     func(c *Config) { c.JWTSecrets = []string{"a", ""} },
		"http JWKS":        func(c *Config) { c.JWKSURL = "http://idp.example/jwks" },
		"relative JWKS":    func(c *Config) { c.JWKSURL = "/jwks" },
		"other scheme":     func(c *Config) { c.JWKSURL = "ftp://idp.example/jwks" },
		"cert without key": func(c *Config) { c.HTTPTLSCert = "c.pem" },
		"empty service":    func(c *Config) { c.ServiceTokens = []string{"b", ""} },
		"service = admin":  func(c *Config) { c.ServiceTokens = []string{"b", "a"} },
	}
	for name, mutate := range bad {
		c := tokenConfig(mutate)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	c := tokenConfig(func(c *Config) { c.Dev = true; c.JWTSecrets = nil })
	_ = c.Validate()
	if len(c.JWTSecrets) != 1 || c.JWTSecrets[0] != DevJWTSecret {
		t.Fatalf("dev secrets %q", c.JWTSecrets)
	}
	if len(c.ServiceTokens) != 1 || c.ServiceTokens[0] != DevServiceToken {
		t.Fatalf("dev service tokens %q", c.ServiceTokens)
	}
	c = tokenConfig(func(c *Config) { c.Dev = true; c.ServiceTokens = []string{"mine"} })
	if err := c.Validate(); err != nil || len(c.ServiceTokens) != 1 || c.ServiceTokens[0] != "mine" {
		t.Fatalf("dev with its own service token: %q %v", c.ServiceTokens, err)
	}
}

func TestLoadTokenKeys(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, blocks ...*pem.Block) string {
		var data []byte
		for _, b := range blocks {
			data = append(data, pem.EncodeToMemory(b)...)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("idp.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	logger, logs := testkit.CapturedLogger()
	s := &Server{log: logger, cfg: tokenConfig(func(c *Config) {
		c.JWTPublicKeyFiles = []string{good, good}
		c.JWKSURL = "https://idp.example/jwks"
	})}
	if err := s.loadTokenKeys(); err != nil {
		t.Fatal(err)
	}
	if len(s.jwtKeys) != 2 || s.jwks == nil {
		t.Fatalf("%d keys, jwks %v", len(s.jwtKeys), s.jwks)
	}
	if !strings.Contains(logs.String(), "shorter than 32 bytes") {
		t.Fatal("a one-byte secret was not warned about")
	}
	for name, path := range map[string]string{
		"missing file": filepath.Join(dir, "none.pem"),
		"private key":  write("priv.pem", &pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		"empty file":   write("empty.pem"),
	} {
		s := &Server{log: logger, cfg: tokenConfig(func(c *Config) { c.JWTPublicKeyFiles = []string{good, path} })}
		if err := s.loadTokenKeys(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--jwt-public-keys") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
