package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	o, err := parse([]string{"--dev", "--prefixes", "demo, other,", "--http", "127.0.0.1:1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.jwtSecret != devJWTSecret || strings.Join(o.prefixes, "|") != "demo|other" || o.http != "127.0.0.1:1" || o.timeout != time.Minute {
		t.Errorf("options %+v", o)
	}
	for _, args := range [][]string{
		{},                              // no secret
		{"--dev", "--timeout", "0s"},    // no timeout
		{"--dev", "--token-cache", "0"}, // 0 is neither a size nor "none"
		{"--jwt-secret", "s", "extra"},  // stray argument
	} {
		if _, err := parse(args, io.Discard); err == nil {
			t.Errorf("parse(%q) accepted", args)
		}
	}
}
