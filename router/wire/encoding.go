package wire

import (
	"encoding/binary"
	"math"
)

// maxItems bounds every decoded list length, so a corrupt length cannot
// make a decoder allocate gigabytes before noticing the frame is short.
const maxItems = 1 << 20

// Encoder appends the binary encoding of requests and replies to a byte
// slice: unsigned varints for lengths and counters, zig-zag varints for
// signed values and length-prefixed strings. It cannot fail. The zero
// value is ready to use; a caller may pool encoders (Reset).
type Encoder struct{ b []byte }

// NewEncoder returns an encoder whose buffer starts with capacity bytes.
func NewEncoder(capacity int) *Encoder { return &Encoder{b: make([]byte, 0, capacity)} }

// Bytes returns what was encoded; it stays valid until the next Reset.
func (e *Encoder) Bytes() []byte { return e.b }

// Reset empties the encoder, keeping its buffer.
func (e *Encoder) Reset() { e.b = e.b[:0] }

// Marshal returns the encoding enc writes (a reply a handler returns).
func Marshal(enc func(*Encoder)) []byte {
	var e Encoder
	enc(&e)
	return e.b
}

func (e *Encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *Encoder) int(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *Encoder) byte(v byte)     { e.b = append(e.b, v) }
func (e *Encoder) string(s string) { e.uint(uint64(len(s))); e.b = append(e.b, s...) }

func (e *Encoder) bool(v bool) {
	if v {
		e.byte(1)
	} else {
		e.byte(0)
	}
}

func (e *Encoder) strings(ss []string) {
	e.uint(uint64(len(ss)))
	for _, s := range ss {
		e.string(s)
	}
}

// decoder reads what Encoder wrote. The first failure sticks: later reads
// return zero values and err reports it, so callers check once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrMalformed
	}
	d.b = nil
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool { return d.byte() != 0 }

// count reads a list length and checks it against what the frame can hold
// (every item takes at least one byte).
func (d *decoder) count() int {
	n := d.uint()
	if n > maxItems || n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

// hops reads a hop count, at most 255.
func (d *decoder) hops() int {
	hops := d.uint()
	if hops > 255 {
		d.fail()
	}
	return int(hops)
}

func (d *decoder) string() string {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) strings() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	return ss
}

// intField reads a signed value that must fit an int.
func (d *decoder) intField() int {
	v := d.int()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail()
		return 0
	}
	return int(v)
}

// finish reports the sticky error, or malformed when bytes are left over.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return d.err
	}
	return nil
}
