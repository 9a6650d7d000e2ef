package webhook

import (
	"encoding/json"
	"time"

	"github.com/presencehq/presence/presence"
)

// Event types: what a message carries, or a resync.
const (
	TypeEnteringUsers  = "entering_users"
	TypeLeavingUserIDs = "leaving_user_ids"
	TypeCountDelta     = "count_delta"
	TypeResync         = "resync"
)

// Reasons of resync events (the "reason" of their data).
const (
	// ReasonMerge: the channel's state was merged from two histories (a
	// partition healed, a replaced owner came back).
	ReasonMerge = "merge"
	// ReasonLost: events could not be recovered: after a failover the
	// channel's backlog no longer reached back to the last acknowledged
	// one, or the channel's state was lost.
	ReasonLost = "lost"
	// ReasonOverflow: the receiver was down or too slow and the queue
	// reached its bound.
	ReasonOverflow = "overflow"
	// ReasonExpired: the events could not be delivered for GiveUpAfter.
	ReasonExpired = "expired"
)

// Payload is the body of a delivery request.
type Payload struct {
	Events []Event `json:"events"`
}

// Event is one event of a Payload, as a receiver decodes it.
type Event struct {
	Channel   string `json:"channel"`
	MessageID int64  `json:"message_id"`
	// Type is TypeEnteringUsers, TypeLeavingUserIDs, TypeCountDelta or
	// TypeResync.
	Type string `json:"type"`
	// Occupied: this message brought the channel its first user; Vacated:
	// it took the last one away.
	Occupied bool `json:"occupied,omitempty"`
	Vacated  bool `json:"vacated,omitempty"`
	// Data is the message's data as subscribers get it ({"entering_users":
	// [...]}, {"leaving_user_ids": [...]}, {"count_delta": n}), or
	// {"reason": "..."} for a resync.
	Data json.RawMessage `json:"data"`
	// Time is when the message was published (RFC 3339, milliseconds).
	Time time.Time `json:"time"`
}

// event is one queued event: a published message, or a resync summing up
// the events of its channel up to id.
type event struct {
	id                int64
	msg               *presence.Message // nil for a resync made here
	reason            string            // resync made here
	occupied, vacated bool
	// since is when the oldest message the event stands for was
	// published (unix ns): the age of what is undelivered.
	since int64
	// queued is when the event was queued (unix ns, the dispatcher's
	// clock): the start of its MaxWait.
	queued int64
}

func (e *event) resync() bool { return e.msg == nil || e.msg.Resync }

// messageEvent returns m's event, with the occupancy given (the flags the
// owner set, or derived from a snapshot), and whether sel selects it:
// by its payload or its occupancy; resync markers always.
func messageEvent(m *presence.Message, occupied, vacated bool, sel presence.WebhookEvents) (event, bool) {
	ev := event{id: m.ID, msg: m, occupied: occupied, vacated: vacated, since: m.PublishedAtUnixMilli * int64(time.Millisecond)}
	if m.Resync {
		ev.occupied, ev.vacated = false, false
		return ev, true
	}
	var kind presence.WebhookEvents
	switch {
	case m.CountOnly:
		kind = presence.WebhookCountDelta
	case len(m.EnteringUsers) > 0:
		kind = presence.WebhookEnteringUsers
	default:
		kind = presence.WebhookLeavingUserIDs
	}
	selected := sel.Has(kind) || occupied && sel.Has(presence.WebhookOccupied) || vacated && sel.Has(presence.WebhookVacated)
	return ev, selected
}

// summary returns a resync event standing for the events of its channel up
// to id, the oldest of them published at since.
func summary(id int64, reason string, since int64) event {
	return event{id: id, reason: reason, since: since}
}

// snapshotEvents returns the events of the messages of s after id after,
// selected by sel, oldest first: a resync first when s's backlog does not
// reach back to after+1 (those events are lost), then its messages. Their
// occupancy is derived walking the backlog back from s's users, each
// message's user delta at a time; before a resync marker (or an
// inconsistency) it is unknown and left unset. now stamps the resync.
func snapshotEvents(s *presence.ChannelSnapshot, after int64, sel presence.WebhookEvents, now int64) []event {
	if s.LastID <= after {
		return nil
	}
	backlog := s.Backlog
	first := s.LastID + 1 // id of the oldest message held
	if len(backlog) > 0 {
		first = backlog[0].ID
	}
	var out []event
	if first > after+1 {
		out = append(out, summary(first-1, ReasonLost, now))
	}
	flags := occupancy(s)
	for i, m := range backlog {
		if m.ID <= after {
			continue
		}
		if ev, ok := messageEvent(m, flags[i].occupied, flags[i].vacated, sel); ok {
			out = append(out, ev)
		}
	}
	return out
}

type occupancyFlags struct{ occupied, vacated bool }

// occupancy derives, for each message of s's backlog, whether it occupied
// or vacated the channel, from the number of users after the last one.
func occupancy(s *presence.ChannelSnapshot) []occupancyFlags {
	users := make(map[string]struct{}, len(s.Clients))
	for _, c := range s.Clients {
		users[c.User.ID] = struct{}{}
	}
	flags := make([]occupancyFlags, len(s.Backlog))
	after := len(users)
	for i := len(s.Backlog) - 1; i >= 0; i-- {
		delta, ok := s.Backlog[i].UserDelta()
		before := after - delta
		if !ok || before < 0 {
			break // unknown from here back
		}
		flags[i] = occupancyFlags{occupied: before == 0 && after > 0, vacated: before > 0 && after == 0}
		after = before
	}
	return flags
}

// wireEvent is an event as it is sent.
type wireEvent struct {
	Channel   string `json:"channel"`
	MessageID int64  `json:"message_id"`
	Type      string `json:"type"`
	Occupied  bool   `json:"occupied,omitempty"`
	Vacated   bool   `json:"vacated,omitempty"`
	Data      any    `json:"data"`
	Time      string `json:"time"`
}

// timeLayout is RFC 3339 with milliseconds, as the message ids' times.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

type enteringData struct {
	EnteringUsers []presence.UserInfo `json:"entering_users"`
}

type leavingData struct {
	LeavingUserIDs []string `json:"leaving_user_ids"`
}

type countData struct {
	CountDelta int `json:"count_delta"`
}

type resyncData struct {
	Reason string `json:"reason"`
}

// wire returns the event as it is sent, for channel.
func (e *event) wire(channel string) wireEvent {
	w := wireEvent{Channel: channel, MessageID: e.id, Occupied: e.occupied, Vacated: e.vacated,
		Time: time.Unix(0, e.since).UTC().Format(timeLayout)}
	m := e.msg
	switch {
	case e.resync():
		w.Type, w.Occupied, w.Vacated = TypeResync, false, false
		reason := e.reason
		if m != nil {
			reason = ReasonMerge
		}
		w.Data = resyncData{Reason: reason}
	case m.CountOnly:
		w.Type, w.Data = TypeCountDelta, countData{CountDelta: m.CountDelta}
	case len(m.EnteringUsers) > 0:
		w.Type, w.Data = TypeEnteringUsers, enteringData{EnteringUsers: m.EnteringUsers}
	default:
		w.Type, w.Data = TypeLeavingUserIDs, leavingData{LeavingUserIDs: nonNil(m.LeavingUserIDs)}
	}
	return w
}

func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// encodeBody renders the events of a batch as a Payload. Strings, numbers
// and booleans only: encoding cannot fail.
func encodeBody(events []wireEvent) ([]byte, error) {
	return json.Marshal(struct {
		Events []wireEvent `json:"events"`
	}{events})
}
