package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
)

var clusterKey = bytes.Repeat([]byte{7}, 32)

// hellos returns two random 38-byte hellos, as the transport's.
func hellos(t *testing.T) (dialer, acceptor []byte) {
	t.Helper()
	dialer, acceptor = make([]byte, 38), make([]byte, 38)
	_, _ = rand.Read(dialer)
	_, _ = rand.Read(acceptor)
	return dialer, acceptor
}

func keys(t *testing.T) (d2a, a2d []byte) {
	t.Helper()
	dh, ah := hellos(t)
	d2a, a2d, err := SessionKeys(clusterKey, dh, ah)
	if err != nil {
		t.Fatal(err)
	}
	return d2a, a2d
}

// buffered is a net.Conn writing into and reading from buffers.
type buffered struct {
	net.Conn
	r io.Reader
	w *bytes.Buffer
}

func (b *buffered) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b *buffered) Write(p []byte) (int, error) { return b.w.Write(p) }

// sealAll returns the records of writes sealed with key, one Write each.
func sealAll(t *testing.T, key []byte, writes ...[]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	c, err := NewConn(&buffered{r: bytes.NewReader(nil), w: &out}, key, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		if n, err := c.Write(w); err != nil || n != len(w) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	return out.Bytes()
}

// openAll reads everything a Conn with key opens from wire.
func openAll(key, wire []byte) ([]byte, error) {
	c, err := NewConn(&buffered{r: bytes.NewReader(wire), w: new(bytes.Buffer)}, key, key)
	if err != nil {
		return nil, err
	}
	got, err := io.ReadAll(c)
	return got, err
}

func TestSessionKeysDifferPerDirectionAndConnection(t *testing.T) {
	dh, ah := hellos(t)
	d2a, a2d, err := SessionKeys(clusterKey, dh, ah)
	if err != nil {
		t.Fatal(err)
	}
	again, _, _ := SessionKeys(clusterKey, dh, ah)
	if !bytes.Equal(d2a, again) {
		t.Fatal("the same handshake gave other keys")
	}
	if bytes.Equal(d2a, a2d) {
		t.Fatal("both directions share a key")
	}
	dh2, ah2 := hellos(t)
	other, _, _ := SessionKeys(clusterKey, dh2, ah2)
	if bytes.Equal(d2a, other) {
		t.Fatal("another handshake gave the same key")
	}
	otherKey, _, _ := SessionKeys(bytes.Repeat([]byte{8}, 32), dh, ah)
	if bytes.Equal(d2a, otherKey) {
		t.Fatal("another cluster key gave the same key")
	}
	if _, _, err := SessionKeys(nil, dh, ah); err == nil {
		t.Fatal("an empty cluster key was accepted")
	}
}

func TestConnRoundTripBothWays(t *testing.T) {
	d2a, a2d := keys(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	dialer, err := NewConn(a, d2a, a2d)
	if err != nil {
		t.Fatal(err)
	}
	acceptor, err := NewConn(b, a2d, d2a)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3*MaxRecord+17) // split into four records
	_, _ = rand.Read(big)
	done := make(chan error, 1)
	go func() {
		got := make([]byte, len(big))
		if _, err := io.ReadFull(acceptor, got); err != nil {
			done <- err
			return
		}
		if !bytes.Equal(got, big) {
			done <- errors.New("the acceptor read other bytes")
			return
		}
		_, err := acceptor.Write([]byte("reply"))
		done <- err
	}()
	if n, err := dialer.Write(big); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	reply := make([]byte, 5)
	if _, err := io.ReadFull(dialer, reply); err != nil || string(reply) != "reply" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWireHoldsNoPlainText(t *testing.T) {
	d2a, _ := keys(t)
	wire := sealAll(t, d2a, []byte("/chat/secret-room user-4711"))
	if bytes.Contains(wire, []byte("secret-room")) || bytes.Contains(wire, []byte("4711")) {
		t.Fatal("plain text on the wire")
	}
	if got, err := openAll(d2a, wire); err != nil || string(got) != "/chat/secret-room user-4711" {
		t.Fatalf("opened %q, %v", got, err)
	}
}

// records splits a wire into its records.
func records(t *testing.T, wire []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(wire) > 0 {
		n := int(binary.BigEndian.Uint32(wire[:lenSize]))
		out = append(out, wire[:lenSize+n])
		wire = wire[lenSize+n:]
	}
	return out
}

func TestAlteredReplayedReorderedOrForeignRecordsFail(t *testing.T) {
	d2a, a2d := keys(t)
	wire := sealAll(t, d2a, []byte("first"), []byte("second"), []byte("third"))
	recs := records(t, wire)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	flipped := bytes.Clone(wire)
	flipped[lenSize+2] ^= 1
	cases := map[string]struct {
		key  []byte
		wire []byte
	}{
		"a flipped bit":       {d2a, flipped},
		"a replayed record":   {d2a, bytes.Join([][]byte{recs[0], recs[0]}, nil)},
		"reordered records":   {d2a, bytes.Join([][]byte{recs[1], recs[0]}, nil)},
		"a dropped record":    {d2a, bytes.Join([][]byte{recs[0], recs[2]}, nil)},
		"the other direction": {a2d, wire},
		"a record too long":   {d2a, binary.BigEndian.AppendUint32(nil, MaxRecord+tagSize+1)},
		"a record too short":  {d2a, binary.BigEndian.AppendUint32(nil, tagSize-1)},
		"injected plain text": {d2a, append(bytes.Clone(recs[0]),
			append(binary.BigEndian.AppendUint32(nil, 32), bytes.Repeat([]byte("x"), 32)...)...)},
		"a truncated record": {d2a, append(bytes.Clone(recs[0]), binary.BigEndian.AppendUint32(nil, 20)...)},
	}
	for name, tc := range cases {
		got, err := openAll(tc.key, tc.wire)
		if name == "a truncated record" {
			// 20 bytes announced, none follow: the stream ends mid-record.
			if string(got) != "first" || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: read %q, %v", name, got, err)
			}
			continue
		}
		if !errors.Is(err, ErrRecord) || (name == "injected plain text" && string(got) != "first") {
			t.Errorf("%s: read %q, err %v; want ErrRecord", name, got, err)
		}
	}
}

func TestReaderSeesRawAndPlain(t *testing.T) {
	d2a, _ := keys(t)
	wire := sealAll(t, d2a, []byte("one"), []byte("two"))
	r, err := NewReader(bytes.NewReader(wire), d2a)
	if err != nil {
		t.Fatal(err)
	}
	var raws []byte
	for _, want := range []string{"one", "two"} {
		raw, plain, err := r.Next()
		if err != nil || string(plain) != want {
			t.Fatalf("Next = %q, %v; want %q", plain, err, want)
		}
		raws = append(raws, raw...)
	}
	if !bytes.Equal(raws, wire) {
		t.Fatal("the raw records differ from the wire")
	}
	if _, _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last record: %v", err)
	}
}

// discard is a net.Conn that accepts every write.
type discard struct{ net.Conn }

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestConnWriteAndReadAllocateNothing: the transport's hot path seals one
// batch per flush; it must not allocate.
func TestConnWriteAndReadAllocateNothing(t *testing.T) {
	d2a, _ := keys(t)
	w, err := NewConn(discard{}, d2a, d2a)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]byte, 4096)
	if n := testing.AllocsPerRun(100, func() { _, _ = w.Write(batch) }); n != 0 {
		t.Errorf("Write allocates %v times", n)
	}
	wire := sealAll(t, d2a, bytes.Repeat([]byte{1}, 4096))
	src := bytes.NewReader(wire)
	r, err := NewConn(&buffered{r: src}, d2a, d2a)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n := testing.AllocsPerRun(1, func() {
		src.Reset(wire)
		r.in.count = 0
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Read allocates %v times", n)
	}
}
