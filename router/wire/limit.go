package wire

import (
	"math"
	"time"
)

// LimitOp is what a MethodLimit call asks. The cluster-wide rate limit
// (package router/ratelimit) keeps each user's bucket on the user's ring
// owner, the keeper; other nodes borrow tokens from it.
type LimitOp uint8

const (
	// LimitBorrow: the sender takes tokens of users' buckets the receiver
	// keeps; the reply grants each user some tokens, maybe none.
	LimitBorrow LimitOp = 1
	// LimitReturn: the sender gives back borrowed tokens it did not spend
	// and counts those it spent; the reply is empty.
	LimitReturn LimitOp = 2
	// LimitRecall: a keeper asks the receiver to give back the tokens it
	// borrowed from the sender for users; the reply says how many each
	// gave back and spent.
	LimitRecall LimitOp = 3
)

// maxLimitTokens bounds the token counts of a MethodLimit frame.
const maxLimitTokens = math.MaxInt32

// LimitEntry is one user's part of a LimitRequest.
type LimitEntry struct {
	User string
	// Tokens asked (LimitBorrow) or given back (LimitReturn); not sent by
	// LimitRecall.
	Tokens int
	// Spent counts the tokens borrowed before that the sender spent since
	// it last told the keeper (LimitBorrow, LimitReturn), the last of them
	// SpentAgo before the call was sent.
	Spent    int
	SpentAgo time.Duration
	// Waiting: a call waits for this borrow (LimitBorrow), so the keeper
	// grants a token when it has one, past the sender's fair share.
	Waiting bool
}

// LimitRequest is a MethodLimit call.
type LimitRequest struct {
	Op    LimitOp
	From  Member
	Users []LimitEntry
}

// Encode implements the request's encoding.
func (q *LimitRequest) Encode(e *Encoder) {
	e.byte(byte(q.Op))
	e.member(q.From)
	e.uint(uint64(len(q.Users)))
	for _, u := range q.Users {
		e.string(u.User)
		e.uint(uint64(max(u.Tokens, 0)))
		e.uint(uint64(max(u.Spent, 0)))
		e.uint(uint64(max(u.SpentAgo, 0)))
		e.bool(u.Waiting)
	}
}

// DecodeLimitRequest decodes a LimitRequest; an unknown op is malformed.
func DecodeLimitRequest(b []byte) (LimitRequest, error) {
	d := decoder{b: b}
	q := LimitRequest{Op: LimitOp(d.byte()), From: d.member()}
	if q.Op < LimitBorrow || q.Op > LimitRecall {
		d.fail()
	}
	q.Users = make([]LimitEntry, d.count())
	for i := range q.Users {
		q.Users[i] = LimitEntry{User: d.string(), Tokens: d.tokens(), Spent: d.tokens(), SpentAgo: d.duration(), Waiting: d.bool()}
	}
	return q, d.finish()
}

// LimitAnswer is the answer for one user of a borrow or a recall.
type LimitAnswer struct {
	// Tokens granted (LimitBorrow) or given back (LimitRecall).
	Tokens int
	// Spent counts the tokens the recalled node spent since it last told
	// the keeper, the last of them SpentAgo before it answered (LimitRecall).
	Spent    int
	SpentAgo time.Duration
	// Wait (LimitBorrow): the keeper's bucket holds less than a token and
	// will hold one after Wait; 0 when it holds one.
	Wait time.Duration
}

// LimitReply answers a LimitBorrow or LimitRecall, user by user in request
// order.
type LimitReply struct {
	Users []LimitAnswer
}

// Encode implements the reply's encoding.
func (p *LimitReply) Encode(e *Encoder) {
	e.uint(uint64(len(p.Users)))
	for _, a := range p.Users {
		e.uint(uint64(max(a.Tokens, 0)))
		e.uint(uint64(max(a.Spent, 0)))
		e.uint(uint64(max(a.SpentAgo, 0)))
		e.uint(uint64(max(a.Wait, 0)))
	}
}

// DecodeLimitReply decodes a LimitReply.
func DecodeLimitReply(b []byte) (LimitReply, error) {
	d := decoder{b: b}
	p := LimitReply{Users: make([]LimitAnswer, d.count())}
	for i := range p.Users {
		p.Users[i] = LimitAnswer{Tokens: d.tokens(), Spent: d.tokens(), SpentAgo: d.duration(), Wait: d.duration()}
	}
	return p, d.finish()
}

// duration reads a non-negative duration.
func (d *decoder) duration() time.Duration {
	v := d.uint()
	if v > math.MaxInt64 {
		d.fail()
		return 0
	}
	return time.Duration(v)
}

// tokens reads a token count.
func (d *decoder) tokens() int {
	n := d.uint()
	if n > maxLimitTokens {
		d.fail()
		return 0
	}
	return int(n)
}
