package wire

import (
	"math"
	"time"

	"github.com/presencehq/presence/presence"
)

// The pieces that requests and replies share: nodes, users, configs,
// channel states, messages, catch-ups, snapshots, interested nodes and
// leaves.

func (e *Encoder) member(m Member) { e.string(m.Name); e.string(m.RPCAddr) }

func (d *decoder) member() Member { return Member{Name: d.string(), RPCAddr: d.string()} }

func (e *Encoder) user(u *presence.User) {
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

// skipUser moves past an encoded user without decoding it; false when the
// encoding is cut short.
func (d *decoder) skipUser() bool {
	if d.byte() == 0 {
		return d.err == nil
	}
	for range 4 {
		d.skipString()
	}
	for range d.count() {
		d.skipString()
	}
	return d.err == nil
}

func (d *decoder) skipString() {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return
	}
	d.b = d.b[n:]
}

func (e *Encoder) userInfo(u presence.UserInfo) {
	e.string(u.ID)
	e.string(u.Username)
	e.string(u.Name)
	e.string(u.AvatarTemplate)
}

func (d *decoder) userInfo() presence.UserInfo {
	return presence.UserInfo{ID: d.string(), Username: d.string(), Name: d.string(), AvatarTemplate: d.string()}
}

func (e *Encoder) userInfos(us []presence.UserInfo) {
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

func (e *Encoder) config(c *presence.Config) {
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

func (e *Encoder) state(st *presence.ChannelState) {
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

func (e *Encoder) messages(ms []*presence.Message) {
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

func (e *Encoder) catchup(cu presence.Catchup) {
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

func (e *Encoder) snapshot(s *presence.ChannelSnapshot) {
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
	e.int(s.Delivered)
	e.int(int64(s.Unpublished))
}

func (d *decoder) snapshot() *presence.ChannelSnapshot {
	s := &presence.ChannelSnapshot{Channel: d.string(), Config: d.config(), LastID: d.int()}
	s.Clients = make([]presence.ClientSnapshot, d.count())
	for i := range s.Clients {
		s.Clients[i] = presence.ClientSnapshot{User: d.userInfo(), ClientID: d.string(), ExpiresAtUnixNano: d.int()}
	}
	s.Backlog = d.messages()
	s.ExpiryGrace = time.Duration(d.int())
	s.Delivered = d.int()
	s.Unpublished = int(d.int())
	return s
}

// Interested is one node following a channel (its hub has subscribers for
// it), as handed over and replicated with the channel. Gen orders the
// interest changes of one node and channel.
type Interested struct {
	Node Member
	Gen  uint64
}

func (e *Encoder) interested(list []Interested) {
	e.uint(uint64(len(list)))
	for _, in := range list {
		e.member(in.Node)
		e.uint(in.Gen)
	}
}

func (d *decoder) interested() []Interested {
	list := make([]Interested, d.count())
	for i := range list {
		list[i] = Interested{Node: d.member(), Gen: d.uint()}
	}
	return list
}

// leaves encodes a leave map: key (a user id, or a client's key in the
// leave log) → unix ns.
func (e *Encoder) leaves(m map[string]int64) {
	e.uint(uint64(len(m)))
	for id, at := range m {
		e.string(id)
		e.int(at)
	}
}

func (d *decoder) leaves() map[string]int64 {
	n := d.count()
	if n == 0 {
		return nil
	}
	m := make(map[string]int64, n)
	for range n {
		id := d.string()
		m[id] = d.int()
	}
	return m
}
