//go:build linux

package main

import (
	"io"
	"net/netip"
	"slices"
	"testing"
)

func TestOptionsSpreadStreamsOverSourcesAndChannels(t *testing.T) {
	o, err := parseOptions([]string{"--url", "http://127.0.0.1:28380/", "--streams", "45000", "--per-source", "20000",
		"--source", "127.0.0.9", "--channels-per-stream", "4", "--channels", "10", "--run-id", "r"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.node != netip.MustParseAddrPort("127.0.0.1:28380") || o.host != "127.0.0.1:28380" || o.url != "http://127.0.0.1:28380" {
		t.Errorf("node %v, host %q, url %q", o.node, o.host, o.url)
	}
	want := []netip.Addr{netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("127.0.0.10"), netip.MustParseAddr("127.0.0.11")}
	if got := o.sources(); !slices.Equal(got, want) {
		t.Errorf("sources %v, want %v", got, want)
	}
	if got := o.channelsOf(3); !slices.Equal(got, []string{"/demo/swarm/all", "/demo/swarm/9", "/demo/swarm/0", "/demo/swarm/1"}) {
		t.Errorf("channels of stream 3: %v", got)
	}
}

func TestOptionsReject(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "https://127.0.0.1:1"},
		{"--url", "127.0.0.1:1"},
		{"--source", "10.0.0.1"},
		{"--source", "127.255.255.255", "--streams", "40000"}, // the second address leaves 127.0.0.0/8
		{"--channels-per-stream", "51"},
		{"--channels-per-stream", "10", "--channels", "5"},
		{"--prefix", `/demo/"x/`},
		{"--streams", "0"},
		{"extra"},
	} {
		if _, err := parseOptions(append([]string{"--url", "http://127.0.0.1:1"}, args...), io.Discard); err == nil {
			t.Errorf("parseOptions(%q) accepted", args)
		}
	}
}
