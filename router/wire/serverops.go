package wire

import (
	"math"

	"github.com/presencehq/presence/presence"
)

// The requests and replies of the server-side API's methods (MethodInspect,
// MethodCan, MethodClear): the application's backend reads, asks and
// clears through any node, which forwards to the channel's holder like
// any call.

// InspectRequest is the server side's read of channels, forwarded to the
// node that holds them (MethodInspect). It is answered by a GetReply whose
// states are whole: users listed even in count-only channels.
type InspectRequest struct {
	Header   Header
	Channels []string
}

// Encode implements the request's encoding.
func (q *InspectRequest) Encode(e *Encoder) {
	e.header(q.Header)
	e.strings(q.Channels)
}

// DecodeInspectRequest decodes an InspectRequest.
func DecodeInspectRequest(b []byte) (InspectRequest, error) {
	d := decoder{b: b}
	q := InspectRequest{Header: d.header(), Channels: d.strings()}
	return q, d.finish()
}

// CanRequest asks the node that serves a channel what a user (nil:
// anonymous) may do in it (MethodCan).
type CanRequest struct {
	Header  Header
	User    *presence.User
	Channel string
}

// Encode implements the request's encoding.
func (q *CanRequest) Encode(e *Encoder) {
	e.header(q.Header)
	e.user(q.User)
	e.string(q.Channel)
}

// DecodeCanRequest decodes a CanRequest.
func DecodeCanRequest(b []byte) (CanRequest, error) {
	d := decoder{b: b}
	q := CanRequest{Header: d.header(), User: d.user(), Channel: d.string()}
	return q, d.finish()
}

// Access flag bits of a CanReply.
const (
	accessExists byte = 1 << iota
	accessView
	accessEnter
	accessCountOnly
	accessAll = accessExists | accessView | accessEnter | accessCountOnly
)

// CanReply answers a CanRequest.
type CanReply struct {
	Access presence.Access
}

// Encode implements the reply's encoding.
func (p *CanReply) Encode(e *Encoder) {
	a := p.Access
	e.byte(flag(a.Exists, accessExists) | flag(a.CanView, accessView) | flag(a.CanEnter, accessEnter) |
		flag(a.CountOnly, accessCountOnly))
	e.uint(uint64(p.Access.MaxUsers))
}

func flag(on bool, bit byte) byte {
	if on {
		return bit
	}
	return 0
}

// DecodeCanReply decodes a CanReply.
func DecodeCanReply(b []byte) (CanReply, error) {
	d := decoder{b: b}
	flags := d.byte()
	maxUsers := d.uint()
	if flags&^accessAll != 0 || maxUsers > math.MaxInt32 {
		d.fail()
	}
	p := CanReply{Access: presence.Access{
		Exists:    flags&accessExists != 0,
		CanView:   flags&accessView != 0,
		CanEnter:  flags&accessEnter != 0,
		CountOnly: flags&accessCountOnly != 0,
		MaxUsers:  int(maxUsers),
	}}
	return p, d.finish()
}

// ClearRequest makes every client of a channel leave, on the node that
// holds it (MethodClear). Like a forwarded update it is dropped when read
// after Header.Deadline: its sender has given up, and may have retried.
type ClearRequest struct {
	Header  Header
	Channel string
}

// Encode implements the request's encoding.
func (q *ClearRequest) Encode(e *Encoder) {
	e.header(q.Header)
	e.string(q.Channel)
}

// DecodeClearRequest decodes a ClearRequest.
func DecodeClearRequest(b []byte) (ClearRequest, error) {
	d := decoder{b: b}
	q := ClearRequest{Header: d.header(), Channel: d.string()}
	return q, d.finish()
}
