package security

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/router/wire"
)

// prefixWrite is the body of methodPrefixWrite (server/rpc.go).
func prefixWrite(t *testing.T, prefix string) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"prefix": prefix,
		"doc":    json.RawMessage(`{"rules": [{"match": "/.+", "config": {"public": true}}]}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// caller returns a transport with the given key, closed at cleanup.
func caller(t *testing.T, key []byte) *transport.Transport {
	t.Helper()
	tr, err := transport.Listen(transport.Config{BindAddr: "127.0.0.1:0", Key: key, CallTimeout: attackTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// refusedBeforeServing reports whether err shows that the call never
// reached a handler: a handler's refusal (a RemoteError) means it did.
func refusedBeforeServing(err error) bool {
	var remote *transport.RemoteError
	return err != nil && !errors.As(err, &remote) && errors.Is(err, transport.ErrPeerUnavailable)
}

// TestCallsRefuseAClientWithoutTheKey: node-to-node calls, the router's
// forwarding methods and the server's forwarded admin write, made by a
// transport without the cluster key or with another one, are refused at
// the handshake: no handler runs, no document is written. The same write
// with the cluster's key goes through, which shows the call would matter.
func TestCallsRefuseAClientWithoutTheKey(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	for name, key := range map[string][]byte{"no key": nil, "another key": randomKey()} {
		tr := caller(t, key)
		for _, n := range c.Running() {
			addr := n.Server().RPCAddr()
			for _, method := range []uint16{wire.MethodUpdate, wire.MethodGet, wire.MethodInstall, methodPrefixWrite} {
				_, err := tr.Call(ctx, addr, method, prefixWrite(t, "pwned"))
				if !refusedBeforeServing(err) {
					t.Errorf("%s: %s method %d: %v, want a refusal before any handler", name, n.Name, method, err)
				}
			}
		}
	}
	for _, n := range c.Running() {
		if hasDocument(t, c, n.Index, "pwned") {
			t.Fatalf("%s serves a document written without the key", n.Name)
		}
	}

	// The control: the cluster's own key makes the same write land.
	key := clusterKey(t, c)
	leader := c.Node(c.Leader())
	if _, err := caller(t, key).Call(ctx, leader.Server().RPCAddr(), methodPrefixWrite, prefixWrite(t, "keyed")); err != nil {
		t.Fatalf("the write with the cluster's key: %v", err)
	}
	if !hasDocument(t, c, leader.Index, "keyed") {
		t.Fatal("the write with the cluster's key did not land")
	}
}

// TestCallsRefuseRawBytes: a client that skips the handshake and writes a
// call frame at once, or a hello of the previous protocol version
// (authentication without encryption), is dropped without an answer.
func TestCallsRefuseRawBytes(t *testing.T) {
	c := startCluster(t, 1)
	addr := c.Node(0).Server().RPCAddr()
	frame := make([]byte, 20+len("pwned"))
	frame[3] = byte(len("pwned")) // body length
	frame[4] = 1                  // a request
	frame[7] = byte(methodPrefixWrite)
	copy(frame[20:], "pwned")
	v1 := append([]byte("PRSN\x01\x00"), make([]byte, 32)...)
	for _, tc := range []struct {
		name string
		msg  []byte
		max  int // bytes the node may answer before it closes
	}{
		{"a bare frame", frame, 0},
		{"a version 1 hello", v1, 38 + 32}, // its own hello, so the dialler can name the mismatch
	} {
		conn, err := net.DialTimeout("tcp", addr, attackTimeout)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(settle))
		if _, err := conn.Write(tc.msg); err != nil {
			t.Fatal(err)
		}
		answer, err := io.ReadAll(conn) // until the node closes
		conn.Close()
		if err != nil || len(answer) > tc.max {
			t.Errorf("%s: answered %d bytes (%v), at most %d then closed", tc.name, len(answer), err, tc.max)
		}
	}
}

// clusterKey returns the cluster's key.
func clusterKey(t *testing.T, c *testcluster.Cluster) []byte {
	t.Helper()
	key := c.Key()
	if key == nil {
		t.Fatal("the cluster has no key")
	}
	return key
}
