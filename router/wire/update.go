package wire

import "github.com/presencehq/presence/presence"

// UpdateRequest is Update forwarded to one owner. MethodUpdate carries a
// batch of them (EncodeUpdateBatch, Intern.DecodeUpdateBatch) and is
// answered with one result per update (UpdateResults).
type UpdateRequest struct {
	Header   Header
	User     *presence.User
	ClientID string
	Present  []string
	Leave    []string
}

// Encode implements the request's encoding.
func (q *UpdateRequest) Encode(e *Encoder) {
	e.header(q.Header)
	e.user(q.User)
	e.string(q.ClientID)
	e.strings(q.Present)
	e.strings(q.Leave)
}

// updateRequest decodes an UpdateRequest as written: the plain decoding
// that the Intern's must equal.
func (d *decoder) updateRequest() UpdateRequest {
	return UpdateRequest{Header: d.header(), User: d.user(), ClientID: d.string(), Present: d.strings(), Leave: d.strings()}
}

// EncodeUpdateBatch writes MethodUpdate's request: n updates, the i-th
// given by at(i).
func EncodeUpdateBatch(e *Encoder, n int, at func(i int) *UpdateRequest) {
	e.uint(uint64(n))
	for i := range n {
		at(i).Encode(e)
	}
}

// An update result is a status byte, then the answers or the error.
const (
	resultOK  byte = 0
	resultErr byte = 1
)

// UpdateResults builds MethodUpdate's reply: one result per update of the
// batch, in order.
type UpdateResults struct{ e Encoder }

// NewUpdateResults starts the reply to a batch of n updates.
func NewUpdateResults(n int) *UpdateResults {
	r := &UpdateResults{e: Encoder{b: make([]byte, 0, 4+3*n)}}
	r.e.uint(uint64(n))
	return r
}

// Add appends the result of the next update: the answers of its present
// channels, or the error that failed it (its sentinel crosses the wire).
func (r *UpdateResults) Add(vals []bool, err error) {
	if err == nil {
		r.e.byte(resultOK)
		encodeBools(&r.e, vals)
		return
	}
	r.e.byte(resultErr)
	r.e.uint(uint64(sentinelCode(err)))
	r.e.string(err.Error())
}

// Bytes returns the reply.
func (r *UpdateResults) Bytes() []byte { return r.e.b }

// UpdateResult is the answer to one update of a batch: the answers of its
// present channels, in request order, or its error (a *RemoteError).
type UpdateResult struct {
	Vals []bool
	Err  error
}

// DecodeUpdateResults decodes the reply to a batch sent to the node from.
// The answers of all updates share one array (capacity capped, so that one
// caller appending cannot reach another's).
func DecodeUpdateResults(b []byte, from string) ([]UpdateResult, error) {
	d := decoder{b: b}
	results := make([]UpdateResult, d.count())
	var vals []bool
	for i := range results {
		switch d.byte() {
		case resultOK:
			n := int(d.uint())
			if n > 8*len(d.b) {
				d.fail()
				break
			}
			if vals == nil {
				vals = make([]bool, 0, min(n, presence.MaxChannelsPerCall)*len(results))
			}
			start := len(vals)
			vals = d.appendBools(vals, n)
			results[i].Vals = vals[start:len(vals):len(vals)]
		case resultErr:
			code, msg := d.uint(), d.string()
			results[i].Err = &RemoteError{Node: from, Message: msg, sentinel: sentinelOf(code)}
		default:
			d.fail()
		}
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return results, nil
}

// encodeBools packs answers, one bit each, in order.
func encodeBools(e *Encoder, vals []bool) {
	e.uint(uint64(len(vals)))
	var cur byte
	for i, v := range vals {
		if v {
			cur |= 1 << (i % 8)
		}
		if i%8 == 7 || i == len(vals)-1 {
			e.byte(cur)
			cur = 0
		}
	}
}

// appendBools decodes n answers packed as encodeBools packs them.
func (d *decoder) appendBools(vals []bool, n int) []bool {
	var cur byte
	for i := range n {
		if i%8 == 0 {
			cur = d.byte()
		}
		vals = append(vals, cur&(1<<(i%8)) != 0)
	}
	return vals
}
