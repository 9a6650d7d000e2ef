package router

import (
	"math"
	"time"

	"github.com/presencehq/presence/presence"
)

// This file encodes the values the router's calls carry. Every call has its
// own request and reply struct with an encode method and a decode function;
// the shared pieces (users, configs, messages, snapshots) are below them.

// header travels with every forwarded call: the sender's ring epoch (logged
// when a call is refused; epochs are per-node counters, so they are not
// compared across nodes), how many times the call was forwarded, and when
// the sender stops waiting for it.
type header struct {
	epoch uint64
	hops  int
	// deadline (unix ns, 0 for none): an update read after it is dropped,
	// since its sender has retried elsewhere; applied late (by a node that
	// was paused with the call in its socket) it would undo newer changes.
	deadline int64
}

func (e *encoder) header(h header) { e.uint(h.epoch); e.uint(uint64(h.hops)); e.int(h.deadline) }

func (d *decoder) header() header {
	h := header{epoch: d.uint()}
	hops := d.uint()
	if hops > 255 {
		d.fail()
	}
	h.hops = int(hops)
	h.deadline = d.int()
	return h
}

// updateRequest is Update forwarded to one owner.
type updateRequest struct {
	hdr      header
	user     *presence.User
	clientID string
	present  []string
	leave    []string
}

func (q *updateRequest) encode(e *encoder) {
	e.header(q.hdr)
	e.user(q.user)
	e.string(q.clientID)
	e.strings(q.present)
	e.strings(q.leave)
}

// encodeBools packs the answers of the present channels, in request order.
func encodeBools(e *encoder, vals []bool) {
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

func decodeBools(b []byte) ([]bool, error) {
	d := decoder{b: b}
	vals := d.bools()
	return vals, d.finish()
}

func (d *decoder) bools() []bool {
	n := d.uint()
	if n > uint64(len(d.b))*8 {
		d.fail()
		n = 0
	}
	vals := make([]bool, n)
	var cur byte
	for i := range vals {
		if i%8 == 0 {
			cur = d.byte()
		}
		vals[i] = cur&(1<<(i%8)) != 0
	}
	return vals
}

// getRequest is Get forwarded to one owner.
type getRequest struct {
	hdr      header
	user     *presence.User
	channels []string
}

func (q *getRequest) encode(e *encoder) {
	e.header(q.hdr)
	e.user(q.user)
	e.strings(q.channels)
}

func decodeGetRequest(b []byte) (getRequest, error) {
	d := decoder{b: b}
	q := getRequest{hdr: d.header(), user: d.user(), channels: d.strings()}
	return q, d.finish()
}

func encodeStates(e *encoder, states []*presence.ChannelState) {
	e.uint(uint64(len(states)))
	for _, st := range states {
		e.state(st)
	}
}

func decodeStates(b []byte) ([]*presence.ChannelState, error) {
	d := decoder{b: b}
	states := make([]*presence.ChannelState, d.count())
	for i := range states {
		states[i] = d.state()
	}
	return states, d.finish()
}

// sinceRequest is a subscriber's catch-up forwarded to the owner. When gen
// is non-zero the owner first registers node's interest in the channel at
// that generation, so that nothing published after the catch-up is missed.
type sinceRequest struct {
	hdr     header
	user    *presence.User
	channel string
	after   int64
	node    Member
	gen     uint64
}

func (q *sinceRequest) encode(e *encoder) {
	e.header(q.hdr)
	e.user(q.user)
	e.string(q.channel)
	e.int(q.after)
	e.member(q.node)
	e.uint(q.gen)
}

func decodeSinceRequest(b []byte) (sinceRequest, error) {
	d := decoder{b: b}
	q := sinceRequest{hdr: d.header(), user: d.user(), channel: d.string(), after: d.int(), node: d.member(), gen: d.uint()}
	return q, d.finish()
}

func decodeCatchup(b []byte) (presence.Catchup, error) {
	d := decoder{b: b}
	cu := d.catchup()
	return cu, d.finish()
}

// interestChange registers (on) or unregisters a node's interest in a
// channel. Changes of one node and channel are ordered by gen: the owner
// ignores one older than what it holds.
type interestChange struct {
	channel string
	on      bool
	gen     uint64
}

// interestRequest carries a node's interest changes for channels that the
// receiver owns (or will own).
type interestRequest struct {
	node    Member
	changes []interestChange
}

func (q *interestRequest) encode(e *encoder) {
	e.member(q.node)
	e.uint(uint64(len(q.changes)))
	for _, c := range q.changes {
		e.string(c.channel)
		e.bool(c.on)
		e.uint(c.gen)
	}
}

func decodeInterestRequest(b []byte) (interestRequest, error) {
	d := decoder{b: b}
	q := interestRequest{node: d.member()}
	q.changes = make([]interestChange, d.count())
	for i := range q.changes {
		q.changes[i] = interestChange{channel: d.string(), on: d.bool(), gen: d.uint()}
	}
	return q, d.finish()
}

// pushRequest carries published messages from an owner to a node with
// subscribers, in publication order.
type pushRequest struct {
	from     string
	messages []*presence.Message
}

func (q *pushRequest) encode(e *encoder) {
	e.string(q.from)
	e.messages(q.messages)
}

func decodePushRequest(b []byte) (pushRequest, error) {
	d := decoder{b: b}
	q := pushRequest{from: d.string(), messages: d.messages()}
	return q, d.finish()
}

// encodeChanges encodes interest changes without a node (the push reply:
// channels the receiver no longer follows, as off changes).
func encodeChanges(e *encoder, changes []interestChange) {
	e.uint(uint64(len(changes)))
	for _, c := range changes {
		e.string(c.channel)
		e.uint(c.gen)
	}
}

func decodeChanges(b []byte) ([]interestChange, error) {
	d := decoder{b: b}
	changes := make([]interestChange, d.count())
	for i := range changes {
		changes[i] = interestChange{channel: d.string(), gen: d.uint()}
	}
	return changes, d.finish()
}

// interested is one node following a channel, as handed over with it.
type interested struct {
	node Member
	gen  uint64
}

func (e *encoder) interested(list []interested) {
	e.uint(uint64(len(list)))
	for _, in := range list {
		e.member(in.node)
		e.uint(in.gen)
	}
}

func (d *decoder) interested() []interested {
	list := make([]interested, d.count())
	for i := range list {
		list[i] = interested{node: d.member(), gen: d.uint()}
	}
	return list
}

// extractRequest asks the previous holder of a channel to hand it over to
// the requester, which may be a node the holder has not seen join yet.
type extractRequest struct {
	channel   string
	requester Member
	boot      uint64 // the requester's process (Router.boot)
}

func (q *extractRequest) encode(e *encoder) {
	e.string(q.channel)
	e.member(q.requester)
	e.uint(q.boot)
}

func decodeExtractRequest(b []byte) (extractRequest, error) {
	d := decoder{b: b}
	q := extractRequest{channel: d.string(), requester: d.member(), boot: d.uint()}
	return q, d.finish()
}

// Outcomes of an extract.
const (
	extractNone      byte = iota + 1 // the holder has no state for the channel
	extractSnapshot                  // here is the state; the holder forgot it
	extractDelivered                 // the holder already handed it to the requester
	extractElsewhere                 // the holder handed it to another node: ask it
	// extractHeld: the holder keeps the channel because it does not see
	// the requester as a member yet; the requester forwards to it until the
	// holder hands the channel over (its rebalance, once it sees it).
	extractHeld
)

// extractReply is the holder's answer.
type extractReply struct {
	outcome   byte
	snap      *presence.ChannelSnapshot // extractSnapshot
	interest  []interested              // extractSnapshot
	elsewhere Member                    // extractElsewhere
}

func (p *extractReply) encode(e *encoder) {
	e.byte(p.outcome)
	switch p.outcome {
	case extractSnapshot:
		e.snapshot(p.snap)
		e.interested(p.interest)
	case extractElsewhere:
		e.member(p.elsewhere)
	}
}

func decodeExtractReply(b []byte) (extractReply, error) {
	d := decoder{b: b}
	p := extractReply{outcome: d.byte()}
	switch p.outcome {
	case extractNone, extractDelivered, extractHeld:
	case extractSnapshot:
		p.snap = d.snapshot()
		p.interest = d.interested()
	case extractElsewhere:
		p.elsewhere = d.member()
	default:
		d.fail()
	}
	return p, d.finish()
}

// installRequest pushes a channel's state to its new owner.
type installRequest struct {
	from     Member
	snap     *presence.ChannelSnapshot
	interest []interested
	// origin is the node whose state this continues (the holder that handed
	// it over, or the dead owner of a promoted copy): replicas drop the
	// copies it sent, which this state supersedes. Empty when unknown.
	origin string
	// leaves are the sender's recent leaves of the channel (user → unix
	// ns), an optional tail: the receiver merges copies last writer wins.
	leaves map[string]int64
}

func (q *installRequest) encode(e *encoder) {
	e.member(q.from)
	e.snapshot(q.snap)
	e.interested(q.interest)
	e.string(q.origin)
	if len(q.leaves) > 0 {
		e.leaves(q.leaves)
	}
}

func decodeInstallRequest(b []byte) (installRequest, error) {
	d := decoder{b: b}
	q := installRequest{from: d.member(), snap: d.snapshot(), interest: d.interested(), origin: d.string()}
	if len(d.b) > 0 {
		if q.leaves = d.leaves(); len(q.leaves) == 0 {
			d.fail() // the tail is only written when it is not empty
		}
	}
	return q, d.finish()
}

// leavesRequest carries the leaves a node answered for a channel it has
// no state of (MethodLeaves), to where the channel is.
type leavesRequest struct {
	from    Member
	channel string
	hops    int
	leaves  map[string]int64 // user or client key → unix ns, never empty
}

func (q *leavesRequest) encode(e *encoder) {
	e.member(q.from)
	e.string(q.channel)
	e.uint(uint64(q.hops))
	e.leaves(q.leaves)
}

func decodeLeavesRequest(b []byte) (leavesRequest, error) {
	d := decoder{b: b}
	q := leavesRequest{from: d.member(), channel: d.string()}
	hops := d.uint()
	if hops > 255 {
		d.fail()
	}
	q.hops = int(hops)
	if q.leaves = d.leaves(); len(q.leaves) == 0 {
		d.fail()
	}
	return q, d.finish()
}

// Shared pieces.

func (e *encoder) member(m Member) { e.string(m.Name); e.string(m.RPCAddr) }

func (d *decoder) member() Member { return Member{Name: d.string(), RPCAddr: d.string()} }

func (e *encoder) user(u *presence.User) {
	if u == nil {
		e.byte(0)
		return
	}
	e.byte(1)
	e.string(u.ID)
	e.string(u.Username)
	e.string(u.Name)
	e.string(u.AvatarTemplate)
	e.strings(u.Groups)
}

func (d *decoder) user() *presence.User {
	if d.byte() == 0 {
		return nil
	}
	return &presence.User{ID: d.string(), Username: d.string(), Name: d.string(), AvatarTemplate: d.string(), Groups: d.strings()}
}

func (e *encoder) userInfo(u presence.UserInfo) {
	e.string(u.ID)
	e.string(u.Username)
	e.string(u.Name)
	e.string(u.AvatarTemplate)
}

func (d *decoder) userInfo() presence.UserInfo {
	return presence.UserInfo{ID: d.string(), Username: d.string(), Name: d.string(), AvatarTemplate: d.string()}
}

func (e *encoder) userInfos(us []presence.UserInfo) {
	e.uint(uint64(len(us)))
	for _, u := range us {
		e.userInfo(u)
	}
}

func (d *decoder) userInfos() []presence.UserInfo {
	n := d.count()
	if n == 0 {
		return nil
	}
	us := make([]presence.UserInfo, n)
	for i := range us {
		us[i] = d.userInfo()
	}
	return us
}

// Config flag bits.
const (
	cfgPresent byte = 1 << iota
	cfgPublic
	cfgCountOnly
)

func (e *encoder) config(c *presence.Config) {
	if c == nil {
		e.byte(0)
		return
	}
	flags := cfgPresent
	if c.Public {
		flags |= cfgPublic
	}
	if c.CountOnly {
		flags |= cfgCountOnly
	}
	e.byte(flags)
	e.strings(c.AllowedUserIDs)
	e.strings(c.AllowedGroupIDs)
	e.int(int64(c.Timeout))
}

func (d *decoder) config() *presence.Config {
	flags := d.byte()
	if flags&cfgPresent == 0 {
		return nil
	}
	return &presence.Config{
		Public:          flags&cfgPublic != 0,
		CountOnly:       flags&cfgCountOnly != 0,
		AllowedUserIDs:  d.strings(),
		AllowedGroupIDs: d.strings(),
		Timeout:         d.intField(),
	}
}

func (e *encoder) state(st *presence.ChannelState) {
	if st == nil {
		e.byte(0)
		return
	}
	if st.CountOnly {
		e.byte(2)
	} else {
		e.byte(1)
	}
	e.uint(uint64(st.Count))
	e.int(st.LastMessageID)
	e.userInfos(st.Users)
}

func (d *decoder) state() *presence.ChannelState {
	kind := d.byte()
	if kind == 0 {
		return nil
	}
	count := d.uint()
	if count > math.MaxInt32 {
		d.fail()
	}
	st := &presence.ChannelState{CountOnly: kind == 2, Count: int(count), LastMessageID: d.int()}
	st.Users = d.userInfos()
	if !st.CountOnly && st.Users == nil {
		st.Users = []presence.UserInfo{} // as the engine answers: a list, even empty
	}
	return st
}

// Audience tags in a message list: consecutive messages usually share their
// channel's config, which is then sent once.
const (
	audienceNone byte = iota
	audienceSame
	audienceInline
)

func (e *encoder) messages(ms []*presence.Message) {
	e.uint(uint64(len(ms)))
	var prev *presence.Config
	for i, m := range ms {
		e.string(m.Channel)
		e.int(m.ID)
		e.bool(m.CountOnly)
		e.bool(m.Resync)
		e.userInfos(m.EnteringUsers)
		e.strings(m.LeavingUserIDs)
		e.int(int64(m.CountDelta))
		e.int(m.PublishedAtUnixMilli)
		switch {
		case m.Audience == nil:
			e.byte(audienceNone)
		case i > 0 && m.Audience == prev:
			e.byte(audienceSame)
		default:
			e.byte(audienceInline)
			e.config(m.Audience)
		}
		prev = m.Audience
	}
}

func (d *decoder) messages() []*presence.Message {
	ms := make([]*presence.Message, d.count())
	var prev *presence.Config
	for i := range ms {
		m := &presence.Message{
			Channel:              d.string(),
			ID:                   d.int(),
			CountOnly:            d.bool(),
			Resync:               d.bool(),
			EnteringUsers:        d.userInfos(),
			LeavingUserIDs:       d.strings(),
			CountDelta:           d.intField(),
			PublishedAtUnixMilli: d.int(),
		}
		switch d.byte() {
		case audienceNone:
		case audienceSame:
			m.Audience = prev
		case audienceInline:
			m.Audience = d.config()
		default:
			d.fail()
		}
		prev = m.Audience
		ms[i] = m
	}
	return ms
}

func (e *encoder) catchup(cu presence.Catchup) {
	e.bool(cu.Unavailable)
	e.bool(cu.Resync)
	e.int(cu.LastID)
	e.messages(cu.Messages)
}

func (d *decoder) catchup() presence.Catchup {
	cu := presence.Catchup{Unavailable: d.bool(), Resync: d.bool(), LastID: d.int()}
	if ms := d.messages(); len(ms) > 0 {
		cu.Messages = ms
	}
	return cu
}

func (e *encoder) snapshot(s *presence.ChannelSnapshot) {
	e.string(s.Channel)
	e.config(s.Config)
	e.int(s.LastID)
	e.uint(uint64(len(s.Clients)))
	for _, c := range s.Clients {
		e.userInfo(c.User)
		e.string(c.ClientID)
		e.int(c.ExpiresAtUnixNano)
	}
	e.messages(s.Backlog)
	e.int(int64(s.ExpiryGrace))
}

func (d *decoder) snapshot() *presence.ChannelSnapshot {
	s := &presence.ChannelSnapshot{Channel: d.string(), Config: d.config(), LastID: d.int()}
	s.Clients = make([]presence.ClientSnapshot, d.count())
	for i := range s.Clients {
		s.Clients[i] = presence.ClientSnapshot{User: d.userInfo(), ClientID: d.string(), ExpiresAtUnixNano: d.int()}
	}
	s.Backlog = d.messages()
	s.ExpiryGrace = time.Duration(d.int())
	return s
}
