package testcluster

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/presencehq/presence/cluster/membership"
)

// accept returns the first connection made to a fresh loopback listener
// while dial runs in the background.
func accept(t *testing.T, dial func(addr string)) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go dial(ln.Addr().String())
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readHead reads what a Raft request's dialler writes first, as the
// proxy's tap sees it: up to raftSniffMax bytes, until the sender shows.
func readHead(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	buf := make([]byte, raftSniffMax)
	n := 0
	for n < len(buf) {
		m, err := conn.Read(buf[n:])
		n += m
		if bytes.Contains(buf[:n], raftEntriesKey) || err != nil {
			break
		}
	}
	return buf[:n]
}

// TestSniffGossipNamesAnEncryptedPushPull: a real memberlist join (an
// encrypted, compressed push/pull) names its sender.
func TestSniffGossipNamesAnEncryptedPushPull(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	m, err := membership.Start(membership.Config{
		Name: "node1", BindAddr: "127.0.0.1:0", Key: key, Fast: true, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	conn := accept(t, func(addr string) { _, _ = m.Join([]string{addr}) })
	parties, head := sniffGossip(conn, key, []string{"node0", "node1", "node12"})
	if !slices.Equal(parties, []int{1}) || len(head) == 0 {
		t.Fatalf("parties %v after %d bytes, want [1]", parties, len(head))
	}
	if parties, _ := sniffGossip(accept(t, func(addr string) { _, _ = m.Join([]string{addr}) }),
		bytes.Repeat([]byte{8}, 32), []string{"node1"}); parties != nil {
		t.Fatalf("another key: parties %v, want none", parties)
	}
}

// TestSniffRaftNamesTheSender: a real Raft vote request names its sender
// by the address in its RPC header, which comes before the other fields.
func TestSniffRaftNamesTheSender(t *testing.T) {
	trans, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, time.Second,
		hclog.New(&hclog.LoggerOptions{Output: io.Discard}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	addrs := []string{"127.0.0.101:7000", "127.0.0.102:7001", "127.0.0.103:7002"}
	conn := accept(t, func(addr string) {
		req := &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("node2"), Addr: []byte(addrs[2])},
			Term:      3, Candidate: []byte(addrs[0]),
		}
		_ = trans.RequestVote("node1", raft.ServerAddress(addr), req, &raft.RequestVoteResponse{})
	})
	head := readHead(t, conn)
	if got := raftSender(head, addrs); got != 2 {
		t.Fatalf("sender %d after %d bytes, want 2", got, len(head))
	}
}

// TestRaftCarriesEntries tells a real append with entries from a heartbeat.
func TestRaftCarriesEntries(t *testing.T) {
	trans, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, time.Second,
		hclog.New(&hclog.LoggerOptions{Output: io.Discard}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	addrs := []string{"127.0.0.101:7000"}
	for _, entries := range []int{0, 2} {
		conn := accept(t, func(addr string) {
			req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("node0"), Addr: []byte(addrs[0])}, Term: 2}
			for i := range entries {
				req.Entries = append(req.Entries, &raft.Log{Index: uint64(i + 1), Term: 2, Type: raft.LogCommand, Data: []byte("x")})
			}
			_ = trans.AppendEntries("node1", raft.ServerAddress(addr), req, &raft.AppendEntriesResponse{})
		})
		head := readHead(t, conn)
		if got := raftCarriesEntries(head); raftSender(head, addrs) != 0 || got != (entries > 0) {
			t.Errorf("%d entries: sender %d, carries entries %v", entries, raftSender(head, addrs), got)
		}
	}
}

func TestRPCSender(t *testing.T) {
	nw := &network{names: []string{"node0", "node1"}, rpcs: []string{"127.0.0.101:7000", "127.0.0.102:7001"}}
	member := func(i int) []byte {
		b := append([]byte{byte(len(nw.names[i]))}, nw.names[i]...)
		return append(append(b, byte(len(nw.rpcs[i]))), nw.rpcs[i]...)
	}
	cases := []struct {
		name string
		body []byte
		want int
	}{
		{"member first", append(member(1), member(0)...), 1},
		{"member after a channel", append([]byte("\x03/a/b"), member(0)...), 0},
		{"push: a bare name first", []byte("\x05node1\x01\x02"), 1},
		{"a name inside, no member", []byte("\x01\x00\x05node1"), -1},
		{"nothing", []byte{1, 0, 2}, -1},
	}
	for _, tc := range cases {
		if got := nw.rpcSender(tc.body); got != tc.want {
			t.Errorf("%s: sender %d, want %d", tc.name, got, tc.want)
		}
	}
}
