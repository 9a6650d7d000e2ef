package router

import (
	"fmt"

	"github.com/presencehq/presence/presence"
)

// MethodReplicate carries a batch of an owner's replication stream to one
// replica: channel snapshots and the changes that followed them, in the
// order the channels made them.
const MethodReplicate uint16 = 8

// replInterest is the kind of a replication item that carries the nodes
// interested in a channel, sent when they change; presence's kinds are
// small numbers.
const replInterest presence.ChangeKind = 200

// replItem is one step of a replication stream: a channel's whole state
// (snapshot), one client's change, or the end of the channel here
// (presence.ChangeStopped).
type replItem struct {
	kind    presence.ChangeKind
	channel string
	// ChangeSnapshot
	snap       *presence.ChannelSnapshot
	interest   []interested
	supersedes string // the node whose copy this state continues, if known
	// ChangeEnter, ChangeRefresh, ChangeLeave
	user     presence.UserInfo // Enter only
	userID   string
	clientID string
	expires  int64
	at       int64
	cfg      *presence.Config // Enter only
	msg      *presence.Message

	// Owner side only: the caller waiting for the item, and when it was
	// queued (replication lag).
	done   chan<- error
	queued int64
}

// change returns the item as the presence.Change a Copy applies.
func (it *replItem) change() *presence.Change {
	c := &presence.Change{Kind: it.kind, Channel: it.channel, UserID: it.userID, ClientID: it.clientID,
		ExpiresAt: it.expires, At: it.at, Config: it.cfg, Message: it.msg}
	if it.kind == presence.ChangeEnter {
		c.User = &presence.User{ID: it.user.ID, Username: it.user.Username, Name: it.user.Name, AvatarTemplate: it.user.AvatarTemplate}
	}
	return c
}

func encodeReplBatch(e *encoder, from Member, boot uint64, items []replItem) {
	e.member(from)
	e.uint(boot)
	e.uint(uint64(len(items)))
	for i := range items {
		it := &items[i]
		e.byte(byte(it.kind))
		e.string(it.channel)
		switch it.kind {
		case presence.ChangeSnapshot:
			e.snapshot(it.snap)
			e.interested(it.interest)
			e.string(it.supersedes)
			continue // the snapshot holds the message already
		case replInterest:
			e.interested(it.interest)
			continue
		case presence.ChangeEnter:
			e.userInfo(it.user)
			e.config(it.cfg)
			fallthrough
		case presence.ChangeRefresh, presence.ChangeLeave:
			e.string(it.userID)
			e.string(it.clientID)
			e.int(it.expires)
			e.int(it.at)
		}
		if it.msg != nil {
			e.messages([]*presence.Message{it.msg})
		} else {
			e.messages(nil)
		}
	}
}

func decodeReplBatch(b []byte) (Member, uint64, []replItem, error) {
	d := decoder{b: b}
	from, boot := d.member(), d.uint()
	n := d.count()
	items := make([]replItem, 0, n)
	for range n {
		it := replItem{kind: presence.ChangeKind(d.byte()), channel: d.string()}
		switch it.kind {
		case presence.ChangeSnapshot:
			it.snap, it.interest, it.supersedes = d.snapshot(), d.interested(), d.string()
			items = append(items, it)
			continue
		case replInterest:
			it.interest = d.interested()
			items = append(items, it)
			continue
		case presence.ChangeEnter:
			it.user, it.cfg = d.userInfo(), d.config()
			fallthrough
		case presence.ChangeRefresh, presence.ChangeLeave:
			it.userID, it.clientID, it.expires, it.at = d.string(), d.string(), d.int(), d.int()
		case presence.ChangeStopped:
		default:
			return Member{}, 0, nil, fmt.Errorf("%w: replication item of kind %d", presence.ErrInvalid, it.kind)
		}
		if ms := d.messages(); len(ms) > 0 {
			it.msg = ms[0]
		}
		items = append(items, it)
	}
	if err := d.finish(); err != nil {
		return Member{}, 0, nil, err
	}
	return from, boot, items, validateReplItems(items)
}

// validateReplItems rejects a batch a correct owner cannot send.
func validateReplItems(items []replItem) error {
	for i := range items {
		it := &items[i]
		if !presence.ValidChannelName(it.channel) {
			return fmt.Errorf("%w: replication item of an invalid channel", presence.ErrInvalid)
		}
		switch {
		case it.kind == presence.ChangeSnapshot && it.snap == nil:
			return fmt.Errorf("%w: replication snapshot missing", presence.ErrInvalid)
		case it.kind == presence.ChangeSnapshot && (it.snap.Channel != it.channel || it.snap.Validate() != nil):
			return fmt.Errorf("%w: replication snapshot of %s is invalid", presence.ErrInvalid, it.channel)
		case it.kind == presence.ChangeEnter && (it.user.ID == "" || it.user.ID != it.userID || it.cfg == nil):
			return fmt.Errorf("%w: replicated enter in %s without user or config", presence.ErrInvalid, it.channel)
		case it.msg != nil && it.msg.Channel != it.channel:
			return fmt.Errorf("%w: replicated message of another channel", presence.ErrInvalid)
		}
	}
	return nil
}

// replReply is a replica's answer to a batch, by channel: refused (the
// replica holds the channel itself: the sender is a stale owner), deferred
// (the sender does not own it in the replica's view: try again once views
// agree) and missing (a change for a channel the replica has no copy of:
// send a snapshot).
type replReply struct {
	refused, deferred, missing []string
}

func (p *replReply) encode(e *encoder) {
	e.strings(p.refused)
	e.strings(p.deferred)
	e.strings(p.missing)
}

func decodeReplReply(b []byte) (replReply, error) {
	d := decoder{b: b}
	p := replReply{refused: d.strings(), deferred: d.strings(), missing: d.strings()}
	return p, d.finish()
}
