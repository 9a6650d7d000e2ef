package router

import (
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// replItem is one step of a replication stream (wire.ReplItem) and, on the
// owner's side, the caller waiting for it and when it was queued
// (replication lag).
type replItem struct {
	wire.ReplItem
	done   chan<- error
	queued int64
}

// change returns the item as the presence.Change a Copy applies.
func change(it *wire.ReplItem) *presence.Change {
	c := &presence.Change{Kind: it.Kind, Channel: it.Channel, UserID: it.UserID, ClientID: it.ClientID,
		ExpiresAt: it.Expires, At: it.At, Config: it.Config, Message: it.Msg}
	if it.Kind == presence.ChangeEnter {
		c.User = &presence.User{ID: it.User.ID, Username: it.User.Username, Name: it.User.Name, AvatarTemplate: it.User.AvatarTemplate}
	}
	return c
}
