package testcluster

import (
	"bytes"
	"compress/lzw"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A TCP connection between two nodes on loopback comes from 127.0.0.1 and
// an ephemeral port whichever node dialled it, so a proxy learns the
// sender, when it can, from the first message. These are the few
// facts of the memberlist (v0.7) and Raft wire formats that needs.
const (
	gossipCompressMsg = 9  // memberlist compressMsg: msgpack {Algo, Buf}, Buf LZW
	gossipEncryptMsg  = 10 // memberlist encryptMsg: uint32 length, AES-GCM payload
	gossipNonceLen    = 12 // after the one-byte encryption version
	gossipLZWWidth    = 8  // memberlist's LZW literal width (LSB order)

	sniffTimeout  = 2 * time.Second // a dialler writes at once on both protocols
	sniffMaxBytes = 8 << 20         // bounds a memberlist push/pull
	raftSniffMax  = 4 << 10         // the sender's address comes first
)

var (
	errSniffTooLarge = errors.New("testcluster: first message too large")
	errSniffFormat   = errors.New("testcluster: unexpected msgpack")
)

// nameForms are the msgpack encodings of a short string such as a node
// name (str or bin): searching for them, length prefix included, cannot
// mistake "node1" for part of "node12".
func nameForms(name string) [][]byte {
	n := byte(len(name))
	return [][]byte{
		append([]byte{0xa0 | n}, name...), // fixstr, also go-msgpack's raw []byte
		append([]byte{0xd9, n}, name...),  // str8
		append([]byte{0xc4, n}, name...),  // bin8
	}
}

// raftAddrKey is the msgpack key of the sender's address in a Raft
// request's RPC header. Raft's codec writes a request's keys in sorted
// order, so "Addr" comes first, before any nested entry or configuration.
var raftAddrKey = []byte("\xa4Addr")

// raftSender returns the index of the address that follows raftAddrKey
// first in b, -1 if none does.
func raftSender(b []byte, addrs []string) int {
	best, at := -1, len(b)
	for i, addr := range addrs {
		for _, form := range nameForms(addr) {
			if j := bytes.Index(b, append(raftAddrKey[:len(raftAddrKey):len(raftAddrKey)], form...)); j >= 0 && j < at {
				best, at = i, j
			}
		}
	}
	return best
}

// mentioned returns the indexes of the names occurring in b.
func mentioned(b []byte, names []string) []int {
	var out []int
	for i, name := range names {
		for _, form := range nameForms(name) {
			if bytes.Contains(b, form) {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

// raftEntriesKey is the msgpack key of an append's entries; its value is
// nil (0xc0) or an empty array (0x90) in a heartbeat.
var raftEntriesKey = []byte("\xa7Entries")

// raftCarriesEntries reports whether head holds an append with entries.
func raftCarriesEntries(head []byte) bool {
	i := bytes.Index(head, raftEntriesKey)
	if i < 0 || i+len(raftEntriesKey) >= len(head) {
		return false
	}
	v := head[i+len(raftEntriesKey)]
	return v != 0xc0 && v != 0x90
}

// sniffGossip reads a memberlist stream's first message (push/pull or TCP
// ping), decrypting it with key when it is encrypted, and returns the
// nodes it names along with the bytes read. A ping names its source and
// target; a push/pull names every node its sender knows.
func sniffGossip(conn net.Conn, key []byte, names []string) (parties []int, head []byte) {
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	defer conn.SetReadDeadline(time.Time{})
	var rec bytes.Buffer
	msg, err := readGossipMessage(io.TeeReader(conn, &rec), key)
	if err != nil {
		return nil, rec.Bytes()
	}
	return mentioned(msg, names), rec.Bytes()
}

// readGossipMessage returns the plain text of the first message on r,
// decompressed. Another kind of message is returned as the bytes of one
// read, enough to find names in a small message.
func readGossipMessage(r io.Reader, key []byte) ([]byte, error) {
	var kind [1]byte
	if _, err := io.ReadFull(r, kind[:]); err != nil {
		return nil, err
	}
	switch kind[0] {
	case gossipEncryptMsg:
		plain, err := readEncrypted(r, key)
		if err != nil {
			return nil, err
		}
		if len(plain) > 0 && plain[0] == gossipCompressMsg {
			return decompressGossip(bytes.NewReader(plain[1:]))
		}
		return plain, nil
	case gossipCompressMsg:
		return decompressGossip(r)
	}
	buf := make([]byte, 64<<10)
	n, err := r.Read(buf)
	return append(kind[:], buf[:n]...), err
}

// readEncrypted reads the length and payload after an encryptMsg byte and
// opens it: memberlist authenticates the type byte and length with it.
func readEncrypted(r io.Reader, key []byte) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > sniffMaxBytes || n < 1+gossipNonceLen {
		return nil, fmt.Errorf("%w: %d bytes", errSniffTooLarge, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	aad := append([]byte{gossipEncryptMsg}, size[:]...)
	// Version 0 pads with PKCS7; padding bytes are harmless to a search.
	return gcm.Open(nil, payload[1:1+gossipNonceLen], payload[1+gossipNonceLen:], aad)
}

// decompressGossip reads memberlist's msgpack {Algo, Buf} and inflates Buf.
func decompressGossip(r io.Reader) ([]byte, error) {
	n, err := msgpackMapLen(r)
	if err != nil {
		return nil, err
	}
	for range n {
		k, err := msgpackBytes(r)
		if err != nil {
			return nil, err
		}
		if string(k) != "Buf" {
			if err := msgpackSkipInt(r); err != nil {
				return nil, err
			}
			continue
		}
		buf, err := msgpackBytes(r)
		if err != nil {
			return nil, err
		}
		lr := lzw.NewReader(bytes.NewReader(buf), lzw.LSB, gossipLZWWidth)
		plain, err := io.ReadAll(io.LimitReader(lr, sniffMaxBytes))
		lr.Close()
		return plain, err
	}
	return nil, fmt.Errorf("%w: no Buf in compressed message", errSniffFormat)
}

func readByte(r io.Reader) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(r, b[:])
	return b[0], err
}

// readUint reads a big-endian unsigned integer of size bytes.
func readUint(r io.Reader, size int) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[8-size:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b[:]), nil
}

func msgpackMapLen(r io.Reader) (uint64, error) {
	b, err := readByte(r)
	switch {
	case err != nil:
		return 0, err
	case b&0xf0 == 0x80:
		return uint64(b & 0x0f), nil
	case b == 0xde:
		return readUint(r, 2)
	case b == 0xdf:
		return readUint(r, 4)
	}
	return 0, fmt.Errorf("%w: map header %#x", errSniffFormat, b)
}

// msgpackBytes reads a str or bin value.
func msgpackBytes(r io.Reader) ([]byte, error) {
	b, err := readByte(r)
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case b&0xe0 == 0xa0:
		n = uint64(b & 0x1f)
	case b == 0xd9 || b == 0xc4:
		n, err = readUint(r, 1)
	case b == 0xda || b == 0xc5:
		n, err = readUint(r, 2)
	case b == 0xdb || b == 0xc6:
		n, err = readUint(r, 4)
	default:
		return nil, fmt.Errorf("%w: string header %#x", errSniffFormat, b)
	}
	if err != nil {
		return nil, err
	}
	if n > sniffMaxBytes {
		return nil, fmt.Errorf("%w: %d-byte string", errSniffTooLarge, n)
	}
	out := make([]byte, n)
	_, err = io.ReadFull(r, out)
	return out, err
}

// msgpackSkipInt skips an integer value.
func msgpackSkipInt(r io.Reader) error {
	b, err := readByte(r)
	if err != nil {
		return err
	}
	size := 0
	switch {
	case b < 0x80 || b >= 0xe0: // positive or negative fixint
	case b == 0xcc || b == 0xd0:
		size = 1
	case b == 0xcd || b == 0xd1:
		size = 2
	case b == 0xce || b == 0xd2:
		size = 4
	case b == 0xcf || b == 0xd3:
		size = 8
	default:
		return fmt.Errorf("%w: integer header %#x", errSniffFormat, b)
	}
	if size > 0 {
		_, err = readUint(r, size)
	}
	return err
}
