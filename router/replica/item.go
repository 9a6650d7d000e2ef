package replica

import (
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// batchMax is the most items sent in one replicate call.
const batchMax = 512

// item is one step of a replication stream (wire.ReplItem) and, on the
// owner's side, the caller waiting for it and when it was queued
// (replication lag).
type item struct {
	wire.ReplItem
	done   chan<- error
	queued int64
	keeper string // a snapshot's: the node to release once it is acknowledged
}

// change returns a stream's step as the presence.Change a Copy applies.
func change(it *wire.ReplItem) *presence.Change {
	c := &presence.Change{Kind: it.Kind, Channel: it.Channel, UserID: it.UserID, ClientID: it.ClientID,
		ExpiresAt: it.Expires, At: it.At, Config: it.Config, Message: it.Msg, Delivered: it.Delivered}
	if it.Kind == presence.ChangeEnter {
		c.User = &presence.User{ID: it.User.ID, Username: it.User.Username, Name: it.User.Name, AvatarTemplate: it.User.AvatarTemplate}
	}
	return c
}
