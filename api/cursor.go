package api

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"slices"
)

// A stream cursor is the SSE event id: it records the last id of every
// channel of the stream so that Last-Event-ID resumes all of them. Names are
// not repeated in it (a stream may have hundreds); instead the ids follow the
// sorted channel names, and a hash of those names ties the cursor to the
// channel set it describes. A cursor presented with a different channel set
// does not apply and is ignored.
//
// Layout, base64url without padding:
//
//	version byte (1) | FNV-1a 64 of the sorted names (8) | zigzag varint id per name
const cursorVersion = 1

// cursor tracks the last id of each channel of a stream. It is encoded for
// every event, so the names' hash is computed once and the ids sit in a
// slice that follows the sorted names. An idle stream keeps its cursor, so
// a channel is found by binary search rather than through a map of its own
// (a map of ten names would double the cursor's size).
type cursor struct {
	names []string // sorted
	ids   []int64  // ids[i] is the last id of names[i]
	hash  uint64   // namesHash(names)
}

func newCursor(from map[string]int64) *cursor {
	c := &cursor{names: make([]string, 0, len(from))}
	for name := range from {
		c.names = append(c.names, name)
	}
	slices.Sort(c.names)
	c.ids = make([]int64, len(c.names))
	for i, name := range c.names {
		c.ids[i] = from[name]
	}
	c.hash = namesHash(c.names)
	return c
}

// set moves channel's id; channels outside the stream are ignored.
func (c *cursor) set(channel string, id int64) {
	if i, ok := slices.BinarySearch(c.names, channel); ok {
		c.ids[i] = id
	}
}

// encode returns the opaque event id.
func (c *cursor) encode() string { return string(c.appendEncoded(nil)) }

// appendEncoded appends the opaque event id to buf.
func (c *cursor) appendEncoded(buf []byte) []byte {
	var scratch [256]byte
	raw := append(scratch[:0], cursorVersion)
	raw = binary.BigEndian.AppendUint64(raw, c.hash)
	for _, id := range c.ids {
		raw = binary.AppendVarint(raw, id)
	}
	return base64.RawURLEncoding.AppendEncode(buf, raw)
}

// decodeCursor returns the ids a cursor records for the stream's sorted
// names. ok is false when the cursor is malformed; applies is false when it
// describes another channel set.
func decodeCursor(s string, names []string) (ids []int64, applies, ok bool) {
	buf, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(buf) < 9 || buf[0] != cursorVersion {
		return nil, false, false
	}
	hash := binary.BigEndian.Uint64(buf[1:9])
	buf = buf[9:]
	var all []int64
	for len(buf) > 0 {
		id, n := binary.Varint(buf)
		if n <= 0 || id < -1 {
			return nil, false, false
		}
		all = append(all, id)
		buf = buf[n:]
	}
	if hash != namesHash(names) || len(all) != len(names) {
		return nil, false, true
	}
	return all, true, true
}

// namesHash fingerprints a sorted channel set; NUL cannot occur in a valid
// channel name, so it separates names unambiguously.
func namesHash(names []string) uint64 {
	h := fnv.New64a()
	for _, n := range names {
		_, _ = h.Write([]byte(n))
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}
