package main

import (
	"bytes"
	"strings"
	"testing"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestFlagsFallBackToEnvironment(t *testing.T) {
	cfg, _, err := parseFlags([]string{"--name", "n1"}, env(map[string]string{
		"PRESENCE_NAME":             "ignored-because-flag-wins",
		"PRESENCE_HTTP":             "127.0.0.1:9999",
		"PRESENCE_JWT_SECRET":       "s3cret",
		"PRESENCE_BOOTSTRAP_EXPECT": "3",
		"PRESENCE_MAX_VOTERS":       "3",
		"PRESENCE_JOIN":             "a:7946, b:7946",
		"PRESENCE_CORS_ORIGINS":     "https://x.example",
		"PRESENCE_DEV":              "true",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "n1" {
		t.Errorf("name %q: the flag must beat PRESENCE_NAME", cfg.Name)
	}
	if cfg.HTTPAddr != "127.0.0.1:9999" || cfg.JWTSecret != "s3cret" || cfg.BootstrapExpect != 3 || cfg.MaxVoters != 3 || !cfg.Dev {
		t.Errorf("environment not applied: %+v", cfg)
	}
	if strings.Join(cfg.Join, "|") != "a:7946|b:7946" || strings.Join(cfg.CORSOrigins, "|") != "https://x.example" {
		t.Errorf("lists: join %q cors %q", cfg.Join, cfg.CORSOrigins)
	}
	if cfg.DataDir != "data/n1" {
		t.Errorf("data dir %q, want data/n1", cfg.DataDir)
	}
}

func TestBadEnvironmentValueIsReported(t *testing.T) {
	_, _, err := parseFlags(nil, env(map[string]string{"PRESENCE_BOOTSTRAP_EXPECT": "three"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "PRESENCE_BOOTSTRAP_EXPECT") {
		t.Fatalf("err = %v, want one naming the variable", err)
	}
}

func TestMissingSecretsExitWithCode2(t *testing.T) {
	cases := map[string][]string{
		"no secrets":      {"--name", "n1", "--data-dir", t.TempDir()},
		"no admin token":  {"--name", "n1", "--data-dir", t.TempDir(), "--jwt-secret", "x"},
		"bad cluster key": {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", "not-base64!"},
		"short key":       {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", "c2hvcnQ="},
		"unknown flag":    {"--nope"},
		"stray argument":  {"--dev", "extra"},
		"bad log level":   {"--dev", "--log-level", "loud"},
		"even max voters": {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--max-voters", "4"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(args, env(nil), &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2 (stderr: %s)", code, stderr.String())
			}
			if stderr.Len() == 0 {
				t.Fatal("no message on stderr")
			}
		})
	}
}

func TestHealthFailsWithoutNode(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"health", "--http", "127.0.0.1:1"}, env(nil), &stderr); code != 1 {
		t.Fatalf("health exit code %d, want 1", code)
	}
}
