package wire

import (
	"fmt"

	"github.com/presencehq/presence/presence"
)

// KindInterest is the kind of a replication item that carries the nodes
// interested in a channel, sent when they change; presence's kinds are
// small numbers.
const KindInterest presence.ChangeKind = 200

// ReplItem is one step of an owner's replication stream: a channel's whole
// state (presence.ChangeSnapshot), one client's change (Enter, Refresh,
// Leave, each with the message it published), the interested nodes
// (KindInterest), the webhook delivery position (presence.ChangeDelivered)
// or the end of the channel on the owner (presence.ChangeStopped).
type ReplItem struct {
	Kind    presence.ChangeKind
	Channel string
	// ChangeSnapshot; Interest also for KindInterest.
	Snap       *presence.ChannelSnapshot
	Interest   []Interested
	Supersedes string // the node whose copy this state continues, if known
	// ChangeEnter, ChangeRefresh, ChangeLeave.
	User     presence.UserInfo // Enter only
	UserID   string
	ClientID string
	Expires  int64
	At       int64
	Config   *presence.Config // Enter only
	Msg      *presence.Message
	// Delivered is the delivery position (presence.ChangeDelivered).
	Delivered int64
}

// ReplicateRequest is a batch of an owner's replication stream to one
// replica (MethodReplicate), in the order the channels made the changes.
type ReplicateRequest struct {
	From  Member
	Boot  uint64 // the sender's process: a copy from another is not continued
	Items []ReplItem
}

// Encode implements the request's encoding.
func (q *ReplicateRequest) Encode(e *Encoder) {
	EncodeReplicateBatch(e, q.From, q.Boot, len(q.Items), func(i int) *ReplItem { return &q.Items[i] })
}

// EncodeReplicateBatch writes a ReplicateRequest whose n items are given
// by at(i), for a sender that keeps them in its own records.
func EncodeReplicateBatch(e *Encoder, from Member, boot uint64, n int, at func(i int) *ReplItem) {
	e.member(from)
	e.uint(boot)
	e.uint(uint64(n))
	for i := range n {
		it := at(i)
		e.byte(byte(it.Kind))
		e.string(it.Channel)
		switch it.Kind {
		case presence.ChangeSnapshot:
			e.snapshot(it.Snap)
			e.interested(it.Interest)
			e.string(it.Supersedes)
			continue // the snapshot holds the message already
		case KindInterest:
			e.interested(it.Interest)
			continue
		case presence.ChangeDelivered:
			e.int(it.Delivered)
			continue
		case presence.ChangeEnter:
			e.userInfo(it.User)
			e.config(it.Config)
			fallthrough
		case presence.ChangeRefresh, presence.ChangeLeave:
			e.string(it.UserID)
			e.string(it.ClientID)
			e.int(it.Expires)
			e.int(it.At)
		}
		if it.Msg != nil {
			e.messages([]*presence.Message{it.Msg})
		} else {
			e.messages(nil)
		}
	}
}

// DecodeReplicateRequest decodes a ReplicateRequest and rejects items a
// correct owner cannot send.
func DecodeReplicateRequest(b []byte) (ReplicateRequest, error) {
	d := decoder{b: b}
	q := ReplicateRequest{From: d.member(), Boot: d.uint()}
	n := d.count()
	q.Items = make([]ReplItem, 0, n)
	for range n {
		it := ReplItem{Kind: presence.ChangeKind(d.byte()), Channel: d.string()}
		switch it.Kind {
		case presence.ChangeSnapshot:
			it.Snap, it.Interest, it.Supersedes = d.snapshot(), d.interested(), d.string()
			q.Items = append(q.Items, it)
			continue
		case KindInterest:
			it.Interest = d.interested()
			q.Items = append(q.Items, it)
			continue
		case presence.ChangeDelivered:
			it.Delivered = d.int()
			q.Items = append(q.Items, it)
			continue
		case presence.ChangeEnter:
			it.User, it.Config = d.userInfo(), d.config()
			fallthrough
		case presence.ChangeRefresh, presence.ChangeLeave:
			it.UserID, it.ClientID, it.Expires, it.At = d.string(), d.string(), d.int(), d.int()
		case presence.ChangeStopped:
		default:
			return ReplicateRequest{}, fmt.Errorf("%w: replication item of kind %d", presence.ErrInvalid, it.Kind)
		}
		if ms := d.messages(); len(ms) > 0 {
			it.Msg = ms[0]
		}
		q.Items = append(q.Items, it)
	}
	if err := d.finish(); err != nil {
		return ReplicateRequest{}, err
	}
	return q, validateReplItems(q.Items)
}

// validateReplItems rejects a batch a correct owner cannot send.
func validateReplItems(items []ReplItem) error {
	for i := range items {
		it := &items[i]
		if !presence.ValidChannelName(it.Channel) {
			return fmt.Errorf("%w: replication item of an invalid channel", presence.ErrInvalid)
		}
		switch {
		case it.Kind == presence.ChangeSnapshot && it.Snap == nil:
			return fmt.Errorf("%w: replication snapshot missing", presence.ErrInvalid)
		case it.Kind == presence.ChangeSnapshot && (it.Snap.Channel != it.Channel || it.Snap.Validate() != nil):
			return fmt.Errorf("%w: replication snapshot of %s is invalid", presence.ErrInvalid, it.Channel)
		case it.Kind == presence.ChangeEnter && (it.User.ID == "" || it.User.ID != it.UserID || it.Config == nil):
			return fmt.Errorf("%w: replicated enter in %s without user or config", presence.ErrInvalid, it.Channel)
		case it.Kind == presence.ChangeDelivered && it.Delivered < 0:
			return fmt.Errorf("%w: replicated delivery position of %s is negative", presence.ErrInvalid, it.Channel)
		case it.Msg != nil && it.Msg.Channel != it.Channel:
			return fmt.Errorf("%w: replicated message of another channel", presence.ErrInvalid)
		}
	}
	return nil
}

// ReplicateReply is a replica's answer to a batch, by channel: Refused
// (the replica holds the channel itself: the sender is a stale owner),
// Deferred (the sender does not own it in the replica's view: try again
// once views agree) and Missing (a change for a channel the replica has no
// copy of: send a snapshot).
type ReplicateReply struct {
	Refused, Deferred, Missing []string
}

// Encode implements the reply's encoding.
func (p *ReplicateReply) Encode(e *Encoder) {
	e.strings(p.Refused)
	e.strings(p.Deferred)
	e.strings(p.Missing)
}

// DecodeReplicateReply decodes a ReplicateReply.
func DecodeReplicateReply(b []byte) (ReplicateReply, error) {
	d := decoder{b: b}
	p := ReplicateReply{Refused: d.strings(), Deferred: d.strings(), Missing: d.strings()}
	return p, d.finish()
}
