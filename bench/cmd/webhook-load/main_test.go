package main

import (
	"io"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	o, err := parseOptions([]string{"--urls", "http://a:1/, http://b:2", "--duration", "60s", "--outage", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.urls) != 2 || o.urls[0] != "http://a:1" || o.outageAt != 27500*time.Millisecond || o.rate != 1000 || o.users != 2000 {
		t.Fatalf("options %+v", o)
	}
	for _, bad := range [][]string{
		{"--urls", ""},
		{"--rate", "5000", "--users", "1000"}, // 5 updates/s per user: over the node's limit
		{"--outage", "2m"},
		{"--outage-mode", "drop"},
		{"--channels", "0"},
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
