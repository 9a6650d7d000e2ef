package replica

import (
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
)

// leaveMemory is how long a leave is remembered for merging copies: longer
// than any pause that ends with two copies of one channel.
const leaveMemory = 10 * time.Minute

// LeaveLog remembers when users and clients left the channels held here,
// so that a stale copy merged later cannot bring them back (last writer
// wins). Keys are user ids or ClientKey values.
type LeaveLog struct {
	mu sync.RWMutex                // read on every forwarded present (LeftAfter)
	by map[string]map[string]int64 // channel → user → leave time (unix ns)
}

func (l *LeaveLog) init() { l.by = make(map[string]map[string]int64) }

// Get returns a copy of channel's leaves merged with extra.
func (l *LeaveLog) Get(channel string, extra map[string]int64) map[string]int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make(map[string]int64, len(l.by[channel])+len(extra))
	for id, at := range l.by[channel] {
		out[id] = at
	}
	for id, at := range extra {
		out[id] = max(out[id], at)
	}
	return out
}

// Add merges leaves received with a channel.
func (l *LeaveLog) Add(channel string, leaves map[string]int64) {
	if len(leaves) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, at := range leaves {
		l.noteLocked(channel, id, at)
	}
}

// AddClient notes that one client of userID left channel at at (unix ns).
func (l *LeaveLog) AddClient(channel, userID, clientID string, at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.noteLocked(channel, ClientKey(userID, clientID), at)
}

// noteLocked records the leave of key (a user, or ClientKey) at at, the
// later one winning; the lock must be held.
func (l *LeaveLog) noteLocked(channel, key string, at int64) {
	users := l.by[channel]
	if users == nil {
		users = make(map[string]int64)
		l.by[channel] = users
	}
	users[key] = max(users[key], at)
}

// LeftAfter reports whether the client (or its user) left channel after t.
func (l *LeaveLog) LeftAfter(channel, userID, clientID string, t int64) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	users := l.by[channel]
	if len(users) == 0 {
		return false
	}
	return users[ClientKey(userID, clientID)] > t || users[userID] > t
}

// prune forgets leaves older than before.
func (l *LeaveLog) prune(before int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, users := range l.by {
		for id, at := range users {
			if at < before {
				delete(users, id)
			}
		}
		if len(users) == 0 {
			delete(l.by, ch)
		}
	}
}

// ClientKey is the leave log key of one client's leave (expiry included);
// a key without NUL is a user's leave, as older hand-offs sent them.
func ClientKey(userID, clientID string) string { return userID + "\x00" + clientID }

// DropLeft returns s without the clients whose user or client left after
// the client's last heartbeat (its expiry minus the channel timeout), by
// leaves (a LeaveLog's Get); s itself when none is dropped.
func DropLeft(s *presence.ChannelSnapshot, leaves map[string]int64) *presence.ChannelSnapshot {
	if len(leaves) == 0 || len(s.Clients) == 0 || s.Config == nil {
		return s
	}
	timeout := int64(s.Config.TimeoutSeconds()) * int64(time.Second)
	kept := make([]presence.ClientSnapshot, 0, len(s.Clients))
	for _, c := range s.Clients {
		heard := c.ExpiresAtUnixNano - timeout
		if at, ok := leaves[c.User.ID]; ok && at > heard {
			continue
		}
		if at, ok := leaves[ClientKey(c.User.ID, c.ClientID)]; ok && at > heard {
			continue
		}
		kept = append(kept, c)
	}
	if len(kept) == len(s.Clients) {
		return s
	}
	out := *s
	out.Clients = kept
	return &out
}
