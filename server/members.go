package server

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/presencehq/presence/cluster/membership"
)

// memberRecord is what the node remembers of one member: its latest state
// and, once it is dead or left, since when.
type memberRecord struct {
	membership.Member
	down time.Time // zero while alive or leaving
}

// gone reports whether the member has failed or left.
func (r memberRecord) gone() bool {
	return r.State == membership.StateDead || r.State == membership.StateLeft
}

// memberTable is the node's view of the cluster: the live members gossip
// reports plus the dead and departed ones, remembered for a while so that
// /admin/cluster shows them and the Raft leader can reap them. Only the
// member loop writes it; HTTP handlers and the Raft worker read it.
type memberTable struct {
	self string
	mu   sync.RWMutex
	recs map[string]memberRecord
}

func newMemberTable(self string) *memberTable {
	return &memberTable{self: self, recs: make(map[string]memberRecord)}
}

// apply records the member state carried by a join, update, leave or
// failure event. It reports a restart: another member that stayed alive in
// gossip while its process was replaced (a crash and a quick restart), seen
// only through its metadata: a new process gossips incarnation 0 until it
// serves, then its own start time.
func (t *memberTable) apply(ev membership.Event, now time.Time) (restarted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := memberRecord{Member: ev.Member}
	if rec.gone() {
		rec.down = now
	}
	prev, known := t.recs[rec.Name]
	restarted = known && !prev.gone() && !rec.gone() && rec.Name != t.self &&
		prev.Meta.Incarnation != 0 && rec.Meta.Incarnation != prev.Meta.Incarnation
	t.recs[rec.Name] = rec
	return restarted
}

// rebuild replaces the view by the live members after dropped events:
// members no longer listed are taken as dead from now.
func (t *memberTable) rebuild(live []membership.Member, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := make(map[string]bool, len(live))
	for _, m := range live {
		seen[m.Name] = true
		t.recs[m.Name] = memberRecord{Member: m}
	}
	for name, rec := range t.recs {
		if !seen[name] && !rec.gone() {
			rec.State, rec.down = membership.StateDead, now
			t.recs[name] = rec
		}
	}
}

// prune forgets members that have been down for longer than keep.
func (t *memberTable) prune(now time.Time, keep time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, rec := range t.recs {
		if rec.gone() && now.Sub(rec.down) > keep {
			delete(t.recs, name)
		}
	}
}

// all returns every remembered member, sorted by name.
func (t *memberTable) all() []memberRecord {
	t.mu.RLock()
	out := make([]memberRecord, 0, len(t.recs))
	for _, rec := range t.recs {
		out = append(out, rec)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b memberRecord) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// alive returns the members that are alive and not leaving, sorted by name:
// the ones that may own channels and vote.
func (t *memberTable) alive() []membership.Member {
	var out []membership.Member
	for _, rec := range t.all() {
		if rec.State == membership.StateAlive {
			out = append(out, rec.Member)
		}
	}
	return out
}

// othersDraining reports whether there are other live members and every
// one of them announced it is draining: none would take a channel over.
func (t *memberTable) othersDraining() bool {
	others := 0
	for _, m := range t.alive() {
		if m.Name == t.self {
			continue
		}
		if !m.Draining {
			return false
		}
		others++
	}
	return others > 0
}

// lookup returns the record of name.
func (t *memberTable) lookup(name string) (memberRecord, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	rec, ok := t.recs[name]
	return rec, ok
}

// othersSeen reports whether a member other than this node is alive.
func (t *memberTable) othersSeen() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for name, rec := range t.recs {
		if name != t.self && !rec.gone() {
			return true
		}
	}
	return false
}
