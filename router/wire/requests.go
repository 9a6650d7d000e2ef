package wire

import "github.com/presencehq/presence/presence"

// Each method has a request type (Encode, and a Decode function) and,
// when it answers something, a reply type.

// Header travels with every forwarded call: the sender's ring epoch (logged
// when a call is refused; epochs are per-node counters, so they are not
// compared across nodes), how many times the call was forwarded, and when
// the sender stops waiting for it.
type Header struct {
	Epoch uint64
	Hops  int
	// Deadline (unix ns, 0 for none): an update read after it is dropped,
	// since its sender has retried elsewhere; applied late (by a node that
	// was paused with the call in its socket) it would undo newer changes.
	Deadline int64
}

func (e *Encoder) header(h Header) { e.uint(h.Epoch); e.uint(uint64(h.Hops)); e.int(h.Deadline) }

func (d *decoder) header() Header {
	h := Header{Epoch: d.uint()}
	h.Hops = d.hops()
	h.Deadline = d.int()
	return h
}

// GetRequest is Get forwarded to one owner (MethodGet).
type GetRequest struct {
	Header   Header
	User     *presence.User
	Channels []string
}

// Encode implements the request's encoding.
func (q *GetRequest) Encode(e *Encoder) {
	e.header(q.Header)
	e.user(q.User)
	e.strings(q.Channels)
}

// DecodeGetRequest decodes a GetRequest.
func DecodeGetRequest(b []byte) (GetRequest, error) {
	d := decoder{b: b}
	q := GetRequest{Header: d.header(), User: d.user(), Channels: d.strings()}
	return q, d.finish()
}

// GetReply answers a GetRequest: the state of each channel, in request
// order (nil where the channel does not exist or may not be viewed).
type GetReply struct {
	States []*presence.ChannelState
}

// Encode implements the reply's encoding.
func (p *GetReply) Encode(e *Encoder) {
	e.uint(uint64(len(p.States)))
	for _, st := range p.States {
		e.state(st)
	}
}

// DecodeGetReply decodes a GetReply.
func DecodeGetReply(b []byte) (GetReply, error) {
	d := decoder{b: b}
	p := GetReply{States: make([]*presence.ChannelState, d.count())}
	for i := range p.States {
		p.States[i] = d.state()
	}
	return p, d.finish()
}

// SinceRequest is a subscriber's catch-up forwarded to the owner
// (MethodSince). When Gen is non-zero the owner first registers Node's
// interest in the channel at that generation, so that nothing published
// after the catch-up is missed.
type SinceRequest struct {
	Header  Header
	User    *presence.User
	Channel string
	After   int64
	Node    Member
	Gen     uint64
}

// Encode implements the request's encoding.
func (q *SinceRequest) Encode(e *Encoder) {
	e.header(q.Header)
	e.user(q.User)
	e.string(q.Channel)
	e.int(q.After)
	e.member(q.Node)
	e.uint(q.Gen)
}

// DecodeSinceRequest decodes a SinceRequest.
func DecodeSinceRequest(b []byte) (SinceRequest, error) {
	d := decoder{b: b}
	q := SinceRequest{Header: d.header(), User: d.user(), Channel: d.string(), After: d.int(), Node: d.member(), Gen: d.uint()}
	return q, d.finish()
}

// SinceReply answers a SinceRequest with the channel's catch-up.
type SinceReply struct {
	Catchup presence.Catchup
}

// Encode implements the reply's encoding.
func (p *SinceReply) Encode(e *Encoder) { e.catchup(p.Catchup) }

// DecodeSinceReply decodes a SinceReply.
func DecodeSinceReply(b []byte) (SinceReply, error) {
	d := decoder{b: b}
	p := SinceReply{Catchup: d.catchup()}
	return p, d.finish()
}

// InterestChange registers (On) or unregisters a node's interest in a
// channel. Changes of one node and channel are ordered by Gen: the owner
// ignores one older than what it holds.
type InterestChange struct {
	Channel string
	On      bool
	Gen     uint64
}

// InterestRequest carries a node's interest changes for channels that the
// receiver owns or will own (MethodInterest).
type InterestRequest struct {
	Node    Member
	Changes []InterestChange
}

// Encode implements the request's encoding.
func (q *InterestRequest) Encode(e *Encoder) {
	e.member(q.Node)
	e.uint(uint64(len(q.Changes)))
	for _, c := range q.Changes {
		e.string(c.Channel)
		e.bool(c.On)
		e.uint(c.Gen)
	}
}

// DecodeInterestRequest decodes an InterestRequest.
func DecodeInterestRequest(b []byte) (InterestRequest, error) {
	d := decoder{b: b}
	q := InterestRequest{Node: d.member()}
	q.Changes = make([]InterestChange, d.count())
	for i := range q.Changes {
		q.Changes[i] = InterestChange{Channel: d.string(), On: d.bool(), Gen: d.uint()}
	}
	return q, d.finish()
}

// PushRequest carries published messages from a channel's holder to a node
// with subscribers, in publication order (MethodPush).
type PushRequest struct {
	From     string
	Messages []*presence.Message
}

// Encode implements the request's encoding.
func (q *PushRequest) Encode(e *Encoder) {
	e.string(q.From)
	e.messages(q.Messages)
}

// DecodePushRequest decodes a PushRequest.
func DecodePushRequest(b []byte) (PushRequest, error) {
	d := decoder{b: b}
	q := PushRequest{From: d.string(), Messages: d.messages()}
	return q, d.finish()
}

// PushReply lists the channels of a push that the receiver no longer
// follows, as off changes (their On is false and not sent). A push every
// channel of which is followed is answered with an empty body instead.
type PushReply struct {
	Unwanted []InterestChange
}

// Encode implements the reply's encoding.
func (p *PushReply) Encode(e *Encoder) {
	e.uint(uint64(len(p.Unwanted)))
	for _, c := range p.Unwanted {
		e.string(c.Channel)
		e.uint(c.Gen)
	}
}

// DecodePushReply decodes a PushReply.
func DecodePushReply(b []byte) (PushReply, error) {
	d := decoder{b: b}
	p := PushReply{Unwanted: make([]InterestChange, d.count())}
	for i := range p.Unwanted {
		p.Unwanted[i] = InterestChange{Channel: d.string(), Gen: d.uint()}
	}
	return p, d.finish()
}

// ExtractRequest asks the previous holder of a channel to hand it over to
// the requester, which may be a node the holder has not seen join yet
// (MethodExtract).
type ExtractRequest struct {
	Channel   string
	Requester Member
	Boot      uint64 // the requester's process
}

// Encode implements the request's encoding.
func (q *ExtractRequest) Encode(e *Encoder) {
	e.string(q.Channel)
	e.member(q.Requester)
	e.uint(q.Boot)
}

// DecodeExtractRequest decodes an ExtractRequest.
func DecodeExtractRequest(b []byte) (ExtractRequest, error) {
	d := decoder{b: b}
	q := ExtractRequest{Channel: d.string(), Requester: d.member(), Boot: d.uint()}
	return q, d.finish()
}

// ExtractOutcome is what the holder answers to an extract.
type ExtractOutcome byte

// Outcomes of an extract.
const (
	ExtractNone      ExtractOutcome = iota + 1 // the holder has no state for the channel
	ExtractSnapshot                            // here is the state; the holder forgot it
	ExtractDelivered                           // the holder already handed it to the requester
	ExtractElsewhere                           // the holder handed it to another node: ask it
	// ExtractHeld: the holder keeps the channel because it does not see
	// the requester as a member yet; the requester forwards to it until the
	// holder hands the channel over (its rebalance, once it sees it).
	ExtractHeld
)

// ExtractReply is the holder's answer to an ExtractRequest.
type ExtractReply struct {
	Outcome   ExtractOutcome
	Snap      *presence.ChannelSnapshot // ExtractSnapshot
	Interest  []Interested              // ExtractSnapshot
	Elsewhere Member                    // ExtractElsewhere
}

// Encode implements the reply's encoding.
func (p *ExtractReply) Encode(e *Encoder) {
	e.byte(byte(p.Outcome))
	switch p.Outcome {
	case ExtractSnapshot:
		e.snapshot(p.Snap)
		e.interested(p.Interest)
	case ExtractElsewhere:
		e.member(p.Elsewhere)
	}
}

// DecodeExtractReply decodes an ExtractReply.
func DecodeExtractReply(b []byte) (ExtractReply, error) {
	d := decoder{b: b}
	p := ExtractReply{Outcome: ExtractOutcome(d.byte())}
	switch p.Outcome {
	case ExtractNone, ExtractDelivered, ExtractHeld:
	case ExtractSnapshot:
		p.Snap = d.snapshot()
		p.Interest = d.interested()
	case ExtractElsewhere:
		p.Elsewhere = d.member()
	default:
		d.fail()
	}
	return p, d.finish()
}

// InstallRequest pushes a channel's state to its new owner (MethodInstall).
type InstallRequest struct {
	From     Member
	Snap     *presence.ChannelSnapshot
	Interest []Interested
	// Origin is the node whose state this continues (the holder that handed
	// it over, or the dead owner of a promoted copy): replicas drop the
	// copies it sent, which this state supersedes. Empty when unknown.
	Origin string
	// Leaves are the sender's recent leaves of the channel (leave log key →
	// unix ns), an optional tail: the receiver merges copies last writer
	// wins.
	Leaves map[string]int64
}

// Encode implements the request's encoding.
func (q *InstallRequest) Encode(e *Encoder) {
	e.member(q.From)
	e.snapshot(q.Snap)
	e.interested(q.Interest)
	e.string(q.Origin)
	if len(q.Leaves) > 0 {
		e.leaves(q.Leaves)
	}
}

// DecodeInstallRequest decodes an InstallRequest.
func DecodeInstallRequest(b []byte) (InstallRequest, error) {
	d := decoder{b: b}
	q := InstallRequest{From: d.member(), Snap: d.snapshot(), Interest: d.interested(), Origin: d.string()}
	if len(d.b) > 0 {
		if q.Leaves = d.leaves(); len(q.Leaves) == 0 {
			d.fail() // the tail is only written when it is not empty
		}
	}
	return q, d.finish()
}

// InstallReply answers an install: the receiver's process, which the
// sender records with the copy it keeps until the receiver's replica has
// the channel (MethodRelease).
type InstallReply struct {
	Boot uint64
}

// Encode implements the reply's encoding.
func (p *InstallReply) Encode(e *Encoder) { e.uint(p.Boot) }

// DecodeInstallReply decodes an InstallReply. (A node that predates it
// answers an empty body: its caller takes that as boot 0, which no process
// has.)
func DecodeInstallReply(b []byte) (InstallReply, error) {
	d := decoder{b: b}
	p := InstallReply{Boot: d.uint()}
	return p, d.finish()
}

// ReleaseRequest tells the node that handed a channel over (or a replica
// copy of it) that the channel is now safe on two nodes: the new holder's
// replica acknowledged its snapshot, so the copy kept for the case that
// the new holder dies first can go (MethodRelease).
type ReleaseRequest struct {
	Channel string
	From    Member // the new holder
	Boot    uint64 // its process
}

// Encode implements the request's encoding.
func (q *ReleaseRequest) Encode(e *Encoder) {
	e.string(q.Channel)
	e.member(q.From)
	e.uint(q.Boot)
}

// DecodeReleaseRequest decodes a ReleaseRequest.
func DecodeReleaseRequest(b []byte) (ReleaseRequest, error) {
	d := decoder{b: b}
	q := ReleaseRequest{Channel: d.string(), From: d.member(), Boot: d.uint()}
	return q, d.finish()
}

// LeavesRequest carries the leaves a node answered for a channel it has
// no state of, to where the channel is (MethodLeaves).
type LeavesRequest struct {
	From    Member
	Channel string
	Hops    int
	Leaves  map[string]int64 // leave log key → unix ns, never empty
}

// Encode implements the request's encoding.
func (q *LeavesRequest) Encode(e *Encoder) {
	e.member(q.From)
	e.string(q.Channel)
	e.uint(uint64(q.Hops))
	e.leaves(q.Leaves)
}

// DecodeLeavesRequest decodes a LeavesRequest.
func DecodeLeavesRequest(b []byte) (LeavesRequest, error) {
	d := decoder{b: b}
	q := LeavesRequest{From: d.member(), Channel: d.string()}
	q.Hops = d.hops()
	if q.Leaves = d.leaves(); len(q.Leaves) == 0 {
		d.fail()
	}
	return q, d.finish()
}
