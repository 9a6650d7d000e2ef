package presence

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// MergeSnapshots combines the state of a channel found on a node (local)
// with a state of the same channel handed to it (in): a hand-off that meets
// a channel the receiver started meanwhile, a replica's copy promoted, the
// two sides of a healed partition. Without local state the handed-over one
// is installed as it is. It is pure: the caller installs the result.
//
// When in is an older copy of local's own history (its last message is in
// local's backlog, unchanged) and brings no user local lacks, subscribers
// of either copy can follow local's history: the clients are united (the
// later expiry wins) and local's ids, backlog and unpublished messages go
// on, diverged false.
// This is the common case of a stale replica copy handed to the node that
// already continued the same channel. The other way round, local an older
// copy of in's history with no user in lacks, in's history goes on the
// same way, and in's messages after local's are published with the
// install for the subscribers that followed local: the case of a node
// paused or cut off, whose stale state meets the channel handed back to
// it (found by the pause test, where it made a third of the channels
// resync).
//
// Otherwise the histories diverged (a partition, a fenced stale owner, a
// fresh start while the holder was unreachable): clients are united and
// the id skips past both histories with an empty backlog, so no id
// repeats; diverged is true and the install publishes a resync marker
// (Engine.InstallMerged), since neither history is complete.
func MergeSnapshots(local, in *ChannelSnapshot) (out *ChannelSnapshot, diverged bool) {
	if local == nil || len(local.Clients) == 0 && len(local.Backlog) == 0 && local.LastID <= in.LastID {
		return in, false
	}
	clients := uniteClients(local.Clients, in.Clients)
	grace := max(local.ExpiryGrace, in.ExpiryGrace)
	// follow goes on with s's history: one history, so a delivery
	// acknowledged on either side was of the same message.
	follow := func(s *ChannelSnapshot) *ChannelSnapshot {
		out := *s
		out.Clients, out.ExpiryGrace, out.Delivered = clients, grace, max(local.Delivered, in.Delivered)
		return &out
	}
	if continues(local, in) && maps.Equal(userSet(clients), userSet(local.Clients)) {
		return follow(local), false
	}
	if continues(in, local) && maps.Equal(userSet(clients), userSet(in.Clients)) {
		newer := follow(in)
		// Subscribers here followed local's history and have not seen
		// in's messages after it: they go out with the install, as the
		// messages its sender had not published do.
		newer.Unpublished = max(in.Unpublished, int(in.LastID-local.LastID))
		return newer, false
	}
	last := max(local.LastID, in.LastID) + 1
	return &ChannelSnapshot{
		Channel: in.Channel,
		Config:  cmp.Or(in.Config, local.Config),
		LastID:  last,
		// Neither history goes on: what either had not delivered is
		// summed up by the resync marker the install publishes next.
		Delivered:   last,
		Clients:     clients,
		ExpiryGrace: grace,
	}, true
}

// DropsAPresentUser reports whether merged, a merge that went on with the
// history of one of sides (the one with merged's last id, as exported or
// handed, before anything dropped clients from it), lacks a user that
// history shows present: the users a history shows present are those of
// its state, and two states with one last id of one history show the same
// users. Such a user left with no message of that history saying so.
func DropsAPresentUser(merged *ChannelSnapshot, sides ...*ChannelSnapshot) bool {
	for _, s := range sides {
		if s != nil && s.LastID == merged.LastID {
			kept := userSet(merged.Clients)
			for u := range userSet(s.Clients) {
				if !kept[u] {
					return true
				}
			}
			return false
		}
	}
	return false
}

// RestartSnapshot returns s as a state that may have gone on without it:
// the state a node handed over and kept until the new holder's replica had
// the channel, promoted because the new holder died first. The new holder
// may have published messages after s (its replica acknowledged its
// snapshot, and the release that would have dropped s was lost), with ids
// s does not know of; continuing s's ids would issue those ids again with
// other messages. So the clients are kept and the ids go on above any id
// the other history could have issued: above s's and at least now in
// microseconds, as a fresh incarnation's (Engine's ids are the time in
// microseconds at a channel's start, plus one per message). The backlog is
// a single resync marker with that id (none without a config: nobody may
// see the channel), delivered to webhooks as the summary of whatever of
// s's messages they missed, and published to subscribers;
// s's own messages, which the other history may contradict, are dropped.
// A copy of the other history merged in later diverges from it (its id is
// above that history's), so subscribers resync then too.
func RestartSnapshot(s *ChannelSnapshot, now time.Time) *ChannelSnapshot {
	last := max(s.LastID+1, now.UnixMicro())
	out := *s
	out.LastID, out.Delivered, out.Backlog, out.Unpublished = last, last, nil, 0
	if s.Config != nil {
		// The installer publishes the marker once its replica has it.
		out.Delivered, out.Unpublished = last-1, 1
		out.Backlog = []*Message{{Channel: s.Channel, ID: last, CountOnly: s.Config.CountOnly, Audience: s.Config,
			PublishedAtUnixMilli: now.UnixMilli(), Resync: true}}
	}
	return &out
}

// uniteClients returns the clients of a and b, once each; of a client in
// both, the later expiry wins.
func uniteClients(a, b []ClientSnapshot) []ClientSnapshot {
	var out []ClientSnapshot
	byKey := make(map[[2]string]int, len(a)+len(b))
	for _, c := range slices.Concat(a, b) {
		key := [2]string{c.User.ID, c.ClientID}
		if i, dup := byKey[key]; dup {
			if c.ExpiresAtUnixNano > out[i].ExpiresAtUnixNano {
				out[i] = c
			}
			continue
		}
		byKey[key] = len(out)
		out = append(out, c)
	}
	return out
}

// continues reports whether local's history runs through in's last
// message: local's backlog holds a message with the same id, published at
// the same time with the same content. Ids are unique to one history up to
// where two copies diverge, and the first message after a divergence is
// published on each side with its own content or time, so an identical
// message proves in's history is a prefix of local's. Without a message in
// in's backlog nothing can be proven.
func continues(local, in *ChannelSnapshot) bool {
	if len(in.Backlog) == 0 || in.LastID > local.LastID {
		return false
	}
	last := in.Backlog[len(in.Backlog)-1]
	i, found := slices.BinarySearchFunc(local.Backlog, last.ID, func(m *Message, id int64) int { return cmp.Compare(m.ID, id) })
	return found && sameMessage(local.Backlog[i], last)
}

// sameMessage reports whether a and b are one published message.
func sameMessage(a, b *Message) bool {
	return a.ID == b.ID && a.PublishedAtUnixMilli == b.PublishedAtUnixMilli &&
		a.CountDelta == b.CountDelta && a.CountOnly == b.CountOnly && a.Resync == b.Resync &&
		slices.Equal(a.LeavingUserIDs, b.LeavingUserIDs) &&
		slices.EqualFunc(a.EnteringUsers, b.EnteringUsers, func(x, y UserInfo) bool { return x.ID == y.ID })
}

// userSet returns the ids of the users with a client among clients.
func userSet(clients []ClientSnapshot) map[string]bool {
	set := make(map[string]bool, len(clients))
	for _, c := range clients {
		set[c.User.ID] = true
	}
	return set
}
