package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// tlsConfigs returns the transport's TLS configurations for a node holding
// leaf and trusting ca. The tests' certificates name "node".
func tlsConfigs(ca *testkit.CA, leaf testkit.Leaf) (server, client *tls.Config) {
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf.TLS},
		RootCAs:      ca.Pool(),
		ServerName:   "node",
	}
	return server, client
}

// counting returns a handler echoing bodies that counts its calls by method.
func counting() (Handler, func(method uint16) int32) {
	var mu sync.Mutex
	calls := map[uint16]int32{}
	h := func(_ context.Context, method uint16, body []byte) ([]byte, error) {
		mu.Lock()
		calls[method]++
		mu.Unlock()
		return body, nil
	}
	return h, func(method uint16) int32 {
		mu.Lock()
		defer mu.Unlock()
		return calls[method]
	}
}

func TestTransportMutualTLS(t *testing.T) {
	ca, other := testkit.NewCA(t, "cluster CA"), testkit.NewCA(t, "another CA")
	key := bytes.Repeat([]byte{1}, 32)
	good := ca.Issue(t, "node", testkit.LeafOptions{})
	edwards := ca.Issue(t, "node", testkit.LeafOptions{Ed25519: true})
	foreign := other.Issue(t, "node", testkit.LeafOptions{})
	serverOnly := ca.Issue(t, "node", testkit.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	srvTLS, _ := tlsConfigs(ca, good)
	cases := []struct {
		name   string
		client func() Config
		ok     bool
	}{
		{"same CA and key", func() Config {
			_, c := tlsConfigs(ca, good)
			s, _ := tlsConfigs(ca, good)
			return Config{Key: key, ServerTLS: s, ClientTLS: c}
		}, true},
		{"an Ed25519 certificate", func() Config {
			s, c := tlsConfigs(ca, edwards)
			return Config{Key: key, ServerTLS: s, ClientTLS: c}
		}, true},
		{"a certificate of another CA", func() Config {
			s, c := tlsConfigs(ca, foreign)
			return Config{Key: key, ServerTLS: s, ClientTLS: c}
		}, false},
		{"a certificate without client authentication", func() Config {
			s, c := tlsConfigs(ca, serverOnly)
			return Config{Key: key, ServerTLS: s, ClientTLS: c}
		}, false},
		{"the right certificate without the key", func() Config {
			s, c := tlsConfigs(ca, good)
			return Config{ServerTLS: s, ClientTLS: c}
		}, false},
		{"the key without TLS", func() Config { return Config{Key: key} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, calls := counting()
			srv := startTransport(t, Config{Key: key, ServerTLS: srvTLS, ClientTLS: &tls.Config{MinVersion: tls.VersionTLS13}, Handler: h})
			cli := startTransport(t, tc.client())
			got, err := cli.Call(testCtx(t), srv.Addr(), 1, []byte("x"))
			if tc.ok {
				if err != nil || string(got) != "x" {
					t.Fatalf("Call = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, ErrPeerUnavailable) {
				t.Fatalf("Call error %v: want ErrPeerUnavailable", err)
			}
			if calls(1) != 0 {
				t.Fatal("the handler ran for a peer without the cluster's credentials")
			}
		})
	}
}

// The client side verifies the server's certificate too.
func TestTransportTLSRefusesAServerOfAnotherCA(t *testing.T) {
	ca, other := testkit.NewCA(t, "cluster CA"), testkit.NewCA(t, "another CA")
	h, calls := counting()
	s, _ := tlsConfigs(other, other.Issue(t, "node", testkit.LeafOptions{}))
	srv := startTransport(t, Config{ServerTLS: s, ClientTLS: &tls.Config{MinVersion: tls.VersionTLS13}, Handler: h})
	cs, cc := tlsConfigs(ca, ca.Issue(t, "node", testkit.LeafOptions{}))
	cli := startTransport(t, Config{ServerTLS: cs, ClientTLS: cc})
	_, err := cli.Call(testCtx(t), srv.Addr(), 1, nil)
	if !errors.Is(err, ErrAuth) || !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("Call error %v: want ErrAuth and ErrPeerUnavailable", err)
	}
	if calls(1) != 0 {
		t.Fatal("a call reached a server of another CA")
	}
}

func TestTransportConfigValidateTLS(t *testing.T) {
	ca := testkit.NewCA(t, "ca")
	s, c := tlsConfigs(ca, ca.Issue(t, "node", testkit.LeafOptions{}))
	weak := c.Clone()
	weak.MinVersion = tls.VersionTLS12
	lax := s.Clone()
	lax.ClientAuth = tls.VerifyClientCertIfGiven
	for name, cfg := range map[string]Config{
		"server only":         {BindAddr: "127.0.0.1:0", ServerTLS: s},
		"client only":         {BindAddr: "127.0.0.1:0", ClientTLS: c},
		"TLS 1.2":             {BindAddr: "127.0.0.1:0", ServerTLS: s, ClientTLS: weak},
		"optional client TLS": {BindAddr: "127.0.0.1:0", ServerTLS: lax, ClientTLS: c},
	} {
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (Config{BindAddr: "127.0.0.1:0", ServerTLS: s, ClientTLS: c}).Validate(); err != nil {
		t.Fatalf("valid TLS config refused: %v", err)
	}
}

// recorder forwards connections to target and keeps every byte, both ways.
type recorder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	seen   bytes.Buffer
}

func startRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			go r.copy(out, in)
			go r.copy(in, out)
		}
	}()
	return r
}

func (r *recorder) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.seen.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.seen.Bytes())
}

// TestTransportWireIsSealed: with a cluster key (and with TLS) neither a
// request nor its reply shows in the bytes between the nodes; without
// either they do, which shows the recorder sees the traffic.
func TestTransportWireIsSealed(t *testing.T) {
	ca := testkit.NewCA(t, "ca")
	s, c := tlsConfigs(ca, ca.Issue(t, "node", testkit.LeafOptions{}))
	key := bytes.Repeat([]byte{3}, 32)
	secret := []byte("/chat/secret-room:user-4711")
	for _, tc := range []struct {
		name  string
		cfg   Config
		plain bool
	}{
		{"cluster key", Config{Key: key}, false},
		{"TLS and cluster key", Config{Key: key, ServerTLS: s, ClientTLS: c}, false},
		{"neither", Config{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvCfg := tc.cfg
			srvCfg.Handler = echo
			srv := startTransport(t, srvCfg)
			rec := startRecorder(t, srv.Addr())
			cli := startTransport(t, tc.cfg)
			for range 3 {
				if got, err := cli.Call(testCtx(t), rec.ln.Addr().String(), 1, secret); err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("Call = %q, %v", got, err)
				}
			}
			seen := rec.bytes()
			if got := bytes.Contains(seen, []byte("secret-room")) || bytes.Contains(seen, []byte("user-4711")); got != tc.plain {
				t.Fatalf("plain text on the wire: %v, want %v (%d bytes seen)", got, tc.plain, len(seen))
			}
		})
	}
}

// Handshake sizes on the wire (handshake.go): dialer hello, acceptor hello
// and proof, dialer verdict and proof, acceptor verdict.
var handshakeSteps = []struct {
	fromDialer bool
	n          int
}{{true, helloLen}, {false, helloLen + proofLen}, {true, 1 + proofLen}, {false, 1}}

// tamperer relays one connection's handshake untouched, then hands the
// dialler's stream to alter, which writes what reaches the acceptor.
func startTamperer(t *testing.T, target string, alter func(from io.Reader, to io.Writer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				for _, step := range handshakeSteps {
					src, dst := io.Reader(out), io.Writer(in)
					if step.fromDialer {
						src, dst = in, out
					}
					if _, err := io.CopyN(dst, src, int64(step.n)); err != nil {
						return
					}
				}
				go func() { _, _ = io.Copy(in, out) }()
				alter(in, out)
			}()
		}
	}()
	return ln.Addr().String()
}

// forgedCall is the plain frame of a call to method 99, preceded by the
// connection kind, as an attacker on the path would write it into an
// authenticated connection.
func forgedCall() []byte {
	var h [headerLen]byte
	body := []byte("forged")
	header{length: uint32(len(body)), kind: kindRequest, code: 99, id: 1 << 40}.encode(&h)
	return append(append([]byte{connCalls}, h[:]...), body...)
}

// unit reads the next unit of the dialler's stream after the handshake:
// a sealed record with a key, else the connection kind byte first and
// then one call frame at a time.
func unit(r io.Reader, keyed, first bool) ([]byte, error) {
	if first && !keyed {
		b := make([]byte, 1)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	size, at := headerLen, 0 // a frame's length leads its header
	if keyed {
		size = 4 // a record's length prefix
	}
	head := make([]byte, size)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[at : at+4])
	rest := make([]byte, n)
	_, err := io.ReadFull(r, rest)
	return append(head, rest...), err
}

// TestTransportRefusesTamperedStreams: an attacker on the path between two
// nodes with a cluster key can neither inject a call after the handshake,
// nor alter or replay what a node sends: the acceptor serves nothing of
// it and drops the connection. Without a key the same injection and
// replay are served, which shows that the tamperer reaches the handler.
func TestTransportRefusesTamperedStreams(t *testing.T) {
	key := bytes.Repeat([]byte{5}, 32)
	type attack func(from io.Reader, to io.Writer, keyed bool)
	attacks := map[string]attack{
		"injected call": func(from io.Reader, to io.Writer, _ bool) {
			_, _ = to.Write(forgedCall())
			_, _ = io.Copy(to, from)
		},
		"replayed call": func(from io.Reader, to io.Writer, keyed bool) {
			for i := 0; ; i++ {
				u, err := unit(from, keyed, i == 0)
				if err != nil {
					return
				}
				_, _ = to.Write(u)
				if i > 0 {
					_, _ = to.Write(u)
				}
			}
		},
		"flipped bit": func(from io.Reader, to io.Writer, keyed bool) {
			for i := 0; ; i++ {
				u, err := unit(from, keyed, i == 0)
				if err != nil {
					return
				}
				if i == 1 {
					u[len(u)-1] ^= 0x10 // the call's last byte (its tag when sealed)
				}
				_, _ = to.Write(u)
			}
		},
	}
	for name, attack := range attacks {
		for _, keyed := range []bool{true, false} {
			if name == "flipped bit" && !keyed {
				continue // a flipped plain byte is just another request
			}
			label := name + " without a key"
			if keyed {
				label = name + " with a key"
			}
			t.Run(label, func(t *testing.T) {
				var k []byte
				if keyed {
					k = key
				}
				h, calls := counting()
				srv := startTransport(t, Config{Key: k, Handler: h})
				addr := startTamperer(t, srv.Addr(), func(from io.Reader, to io.Writer) { attack(from, to, keyed) })
				cli := startTransport(t, Config{Key: k, CallTimeout: time.Second})
				_, _ = cli.Call(testCtx(t), addr, 7, []byte("genuine"))
				if !keyed {
					testkit.WaitFor(t, "the attack to reach the handler", func() bool { return calls(99) > 0 || calls(7) > 1 })
					return
				}
				testkit.WaitFor(t, "the tampered connection to close", func() bool { return connCount(srv) == 0 })
				switch {
				case calls(99) != 0:
					t.Fatal("the forged call was served")
				case calls(7) > 1:
					t.Fatal("the replayed call was served")
				case name == "flipped bit" && calls(7) != 0:
					t.Fatal("the altered call was served")
				}
			})
		}
	}
}

// TestTransportRefusesOtherVersions: a version 1 peer (authentication
// without sealing) is refused with a message naming both versions.
func TestTransportRefusesOtherVersions(t *testing.T) {
	logger, logs := testkit.CapturedLogger()
	h, calls := counting()
	srv := startTransport(t, Config{Handler: h, Logger: logger})
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	hello := append([]byte(magic), 1, 0)
	hello = append(hello, make([]byte, nonceLen)...)
	if _, err := nc.Write(hello); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the refusal to be logged", func() bool {
		return strings.Contains(logs.String(), "peer speaks transport version 1, this node 2")
	})
	if calls(1) != 0 {
		t.Fatal("served a version 1 peer")
	}
}

func TestStreamsCarryBytesAndCloseWithTheTransport(t *testing.T) {
	ca := testkit.NewCA(t, "ca")
	s, c := tlsConfigs(ca, ca.Issue(t, "node", testkit.LeafOptions{}))
	key := bytes.Repeat([]byte{9}, 32)
	for name, cfg := range map[string]Config{"cluster key": {Key: key}, "TLS": {Key: key, ServerTLS: s, ClientTLS: c}, "none": {}} {
		t.Run(name, func(t *testing.T) {
			a := startTransport(t, cfg)
			b, err := Listen(withBind(cfg))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				conn, err := a.Streams().Accept()
				if err == nil {
					accepted <- conn
				}
			}()
			out, err := b.Streams().DialContext(testCtx(t), a.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := out.Write([]byte("append entries")); err != nil {
				t.Fatal(err)
			}
			in := <-accepted
			got := make([]byte, len("append entries"))
			if _, err := io.ReadFull(in, got); err != nil || string(got) != "append entries" {
				t.Fatalf("read %q, %v", got, err)
			}
			if _, err := in.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(out, got[:2]); err != nil || string(got[:2]) != "ok" {
				t.Fatalf("reply %q, %v", got[:2], err)
			}
			// Closing the dialling transport closes its stream; the other
			// end reads the end of it.
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := out.Read(got); err == nil {
				t.Fatal("a stream of a closed transport still reads")
			}
			if _, err := in.Read(got); err == nil {
				t.Fatal("the peer's stream did not end")
			}
		})
	}
}

func withBind(cfg Config) Config {
	cfg.BindAddr = "127.0.0.1:0"
	return cfg
}

// TestStreamsCloseAbortsDials: a dial whose peer never answers the
// handshake ends when Streams close, not at its timeout; so Raft's
// shutdown is not held by a heartbeat to a peer that vanished.
func TestStreamsCloseAbortsDials(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tr := startTransport(t, Config{Key: bytes.Repeat([]byte{1}, 32), DialTimeout: time.Hour})
	done := make(chan error, 1)
	go func() {
		_, err := tr.Streams().DialContext(context.Background(), silent.Addr().String())
		done <- err
	}()
	conn, err := silent.Accept() // the dial is in its handshake
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := tr.Streams().Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamsClosed) {
			t.Fatalf("dial after Close: %v, want ErrStreamsClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("a dial outlived Streams.Close")
	}
	if _, err := tr.Streams().Accept(); !errors.Is(err, ErrStreamsClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestStreamsRefusedWithoutConsumer: a stream nobody accepts is closed
// after DialTimeout, never left open.
func TestStreamsRefusedWithoutConsumer(t *testing.T) {
	srv := startTransport(t, Config{DialTimeout: 200 * time.Millisecond})
	cli := startTransport(t, Config{})
	conn, err := cli.Streams().DialContext(testCtx(t), srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a stream nobody accepted: %v, want EOF", err)
	}
}

// TestTransportKeyRotation walks the steps of a cluster key rotation
// between two nodes, calls going both ways: the new key accepted
// everywhere, then primary everywhere, then the old one dropped. Nodes
// whose keys do not overlap that way refuse each other.
func TestTransportKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ring := func(primary []byte, accepted ...[]byte) Config {
		return Config{Key: primary, AcceptKeys: accepted}
	}
	cases := []struct {
		name   string
		a, b   Config
		ab, ba bool // calls from a to b, from b to a succeed
	}{
		{"one node accepts the new key", ring(oldKey), ring(oldKey, newKey), true, true},
		{"one node made it primary", ring(oldKey, newKey), ring(newKey, oldKey), true, true},
		{"one node dropped the old key", ring(newKey, oldKey), ring(newKey), true, true},
		{"the rotation's end", ring(newKey), ring(newKey), true, true},
		{"keys that do not overlap", ring(oldKey), ring(newKey), false, false},
		{"a step skipped", ring(newKey), ring(oldKey, newKey), false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.a, tc.b
			a.Handler, b.Handler = echo, echo
			ta, tb := startTransport(t, a), startTransport(t, b)
			for _, dir := range []struct {
				from, to *Transport
				ok       bool
				label    string
			}{{ta, tb, tc.ab, "a to b"}, {tb, ta, tc.ba, "b to a"}} {
				_, err := dir.from.Call(testCtx(t), dir.to.Addr(), 1, []byte("x"))
				if dir.ok && err != nil {
					t.Errorf("%s: %v", dir.label, err)
				}
				if !dir.ok && !errors.Is(err, ErrAuth) {
					t.Errorf("%s: %v, want ErrAuth", dir.label, err)
				}
			}
		})
	}
	if err := (Config{BindAddr: "127.0.0.1:0", AcceptKeys: [][]byte{oldKey}}).Validate(); err == nil {
		t.Error("accepted keys without a primary key were accepted")
	}
	if err := (Config{BindAddr: "127.0.0.1:0", Key: oldKey, AcceptKeys: [][]byte{[]byte("short")}}).Validate(); err == nil {
		t.Error("a short accepted key was accepted")
	}
}
