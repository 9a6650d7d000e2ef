package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
)

// Sizes of the record format.
const (
	// MaxRecord is the most plaintext one record carries. Larger writes
	// are split; the transport's batches (64 KiB buffers) fit in one.
	MaxRecord = 64 << 10
	// lenSize is the length prefix; tagSize the GCM tag.
	lenSize = 4
	tagSize = 16
	// Overhead is what a record adds to its plaintext on the wire.
	Overhead = lenSize + tagSize
	keySize  = 32 // AES-256
)

// Labels of the two directions' keys (HKDF info).
const (
	infoDialerToAcceptor = "presence transport v2 dialer to acceptor"
	infoAcceptorToDialer = "presence transport v2 acceptor to dialer"
)

// ErrRecord marks a record that does not open: altered, replayed,
// reordered, sealed with another key, or longer than a record may be. The
// connection cannot continue after it.
var ErrRecord = errors.New("seal: record rejected")

// errExhausted: a direction sealed 2^64-1 records (unreachable in
// practice, but a nonce must never repeat).
var errExhausted = errors.New("seal: record counter exhausted")

// SessionKeys derives the keys of one connection from the cluster key and
// its handshake's hellos: one for what the dialer sends, one for what the
// acceptor sends. The hellos carry fresh nonces of both sides, so the keys
// differ for every connection and a recorded session replayed to a node
// does not open.
func SessionKeys(clusterKey, dialerHello, acceptorHello []byte) (dialerToAcceptor, acceptorToDialer []byte, err error) {
	if len(clusterKey) == 0 {
		return nil, nil, errors.New("seal: empty cluster key")
	}
	salt := make([]byte, 0, len(dialerHello)+len(acceptorHello))
	salt = append(append(salt, dialerHello...), acceptorHello...)
	if dialerToAcceptor, err = hkdf.Key(sha256.New, clusterKey, salt, infoDialerToAcceptor, keySize); err != nil {
		return nil, nil, fmt.Errorf("seal: derive key: %w", err)
	}
	if acceptorToDialer, err = hkdf.Key(sha256.New, clusterKey, salt, infoAcceptorToDialer, keySize); err != nil {
		return nil, nil, fmt.Errorf("seal: derive key: %w", err)
	}
	return dialerToAcceptor, acceptorToDialer, nil
}

// direction is the cipher and record counter of one direction.
type direction struct {
	aead  cipher.AEAD
	count uint64
	nonce [12]byte
}

func newDirection(key []byte) (direction, error) {
	if len(key) != keySize {
		return direction{}, fmt.Errorf("seal: key of %d bytes, want %d", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return direction{}, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return direction{}, fmt.Errorf("seal: %w", err)
	}
	return direction{aead: aead}, nil
}

// next returns the nonce of the next record: its position, big endian, in
// the last eight bytes.
func (d *direction) next() ([]byte, error) {
	if d.count == math.MaxUint64 {
		return nil, errExhausted
	}
	binary.BigEndian.PutUint64(d.nonce[4:], d.count)
	d.count++
	return d.nonce[:], nil
}

// opener reads and opens the records of one direction into buf.
type opener struct {
	direction
	r   io.Reader
	buf []byte // length prefix, then ciphertext: lenSize + MaxRecord + tagSize
}

func newOpener(r io.Reader, key []byte) (opener, error) {
	d, err := newDirection(key)
	if err != nil {
		return opener{}, err
	}
	return opener{direction: d, r: r, buf: make([]byte, lenSize+MaxRecord+tagSize)}, nil
}

// read reads the next record and returns it whole (raw) and its
// ciphertext, both in buf.
func (o *opener) read() (raw, sealed []byte, err error) {
	if _, err := io.ReadFull(o.r, o.buf[:lenSize]); err != nil {
		return nil, nil, err
	}
	n := binary.BigEndian.Uint32(o.buf[:lenSize])
	if n < tagSize || n > MaxRecord+tagSize {
		return nil, nil, fmt.Errorf("%w: length %d out of range", ErrRecord, n)
	}
	raw = o.buf[:lenSize+int(n)]
	if _, err := io.ReadFull(o.r, raw[lenSize:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // a stream cut inside a record is not a clean end
		}
		return nil, nil, err
	}
	return raw, raw[lenSize:], nil
}

// open authenticates and decrypts sealed into dst[:0], which may be
// sealed[:0] to open in place.
func (o *opener) open(dst, raw, sealed []byte) ([]byte, error) {
	nonce, err := o.next()
	if err != nil {
		return nil, err
	}
	plain, err := o.aead.Open(dst[:0], nonce, sealed, raw[:lenSize])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRecord, err)
	}
	return plain, nil
}

// Conn is a connection whose writes are sealed into records and whose
// reads open them. It allocates its two record buffers once. Reads and
// writes may run concurrently; writes are serialized.
type Conn struct {
	net.Conn
	in    opener
	plain []byte // opened bytes not read yet, inside in.buf

	wmu  sync.Mutex
	out  direction
	wbuf []byte // one sealed record: lenSize + MaxRecord + tagSize
	werr error  // a failed write leaves the stream unusable
}

// NewConn protects c: what is written is sealed with sendKey, what is
// read is opened with recvKey (keys from SessionKeys, chosen by role).
func NewConn(c net.Conn, sendKey, recvKey []byte) (*Conn, error) {
	in, err := newOpener(c, recvKey)
	if err != nil {
		return nil, err
	}
	out, err := newDirection(sendKey)
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, in: in, out: out, wbuf: make([]byte, lenSize+MaxRecord+tagSize)}, nil
}

// Read returns opened bytes, reading the next record when none are left.
// An altered record fails with ErrRecord.
func (c *Conn) Read(p []byte) (int, error) {
	for len(c.plain) == 0 {
		raw, sealed, err := c.in.read()
		if err != nil {
			return 0, err
		}
		if c.plain, err = c.in.open(sealed, raw, sealed); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// Write seals p into records of at most MaxRecord bytes and writes each
// with one call to the connection: the transport's writer hands over a
// whole batch at a time, so a batch costs one seal and one syscall.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxRecord)]
		if err := c.writeRecord(chunk); err != nil {
			c.werr = err
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

func (c *Conn) writeRecord(chunk []byte) error {
	nonce, err := c.out.next()
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(c.wbuf[:lenSize], uint32(len(chunk)+tagSize))
	sealed := c.out.aead.Seal(c.wbuf[lenSize:lenSize], nonce, chunk, c.wbuf[:lenSize])
	_, err = c.Conn.Write(c.wbuf[:lenSize+len(sealed)])
	return err
}

// Reader opens the records of one direction of a connection for an
// observer that holds the key, such as a test's network tap: it hands
// out each record as read and as opened, so the observer can decide on
// the plain text before passing the record on.
type Reader struct {
	opener
	plain []byte
}

// NewReader reads records from r and opens them with key.
func NewReader(r io.Reader, key []byte) (*Reader, error) {
	o, err := newOpener(r, key)
	if err != nil {
		return nil, err
	}
	return &Reader{opener: o, plain: make([]byte, 0, MaxRecord)}, nil
}

// Next returns the next record as read from r and its plain text, both
// valid until the next call.
func (r *Reader) Next() (raw, plain []byte, err error) {
	raw, sealed, err := r.read()
	if err != nil {
		return nil, nil, err
	}
	plain, err = r.open(r.plain, raw, sealed)
	if err != nil {
		return nil, nil, err
	}
	return raw, plain, nil
}
