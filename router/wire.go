package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/presencehq/presence/presence"
)

// errMalformed is wrapped by every decoding failure; it maps to
// presence.ErrInvalid so a corrupt frame never looks like a server fault.
var errMalformed = fmt.Errorf("%w: malformed router frame", presence.ErrInvalid)

// maxWireItems bounds every decoded list length, so a corrupt length cannot
// make a decoder allocate gigabytes before noticing the frame is short.
const maxWireItems = 1 << 20

// encoder appends the router's binary encoding to a byte slice: unsigned
// varints for lengths and counters, zig-zag varints for signed values and
// length-prefixed strings. It cannot fail.
type encoder struct{ b []byte }

func (e *encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) byte(v byte)     { e.b = append(e.b, v) }
func (e *encoder) string(s string) { e.uint(uint64(len(s))); e.b = append(e.b, s...) }

func (e *encoder) bool(v bool) {
	if v {
		e.byte(1)
	} else {
		e.byte(0)
	}
}

func (e *encoder) strings(ss []string) {
	e.uint(uint64(len(ss)))
	for _, s := range ss {
		e.string(s)
	}
}

// decoder reads what encoder wrote. The first failure sticks: later reads
// return zero values and err reports it, so callers check once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errMalformed
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
	if n > maxWireItems || n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
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

// isMalformed reports whether err comes from decoding.
func isMalformed(err error) bool { return errors.Is(err, errMalformed) }
