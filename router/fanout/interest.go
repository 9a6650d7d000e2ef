package fanout

import (
	"sync"

	"github.com/presencehq/presence/router/wire"
)

// table is the holder's side of cross-node subscriptions: for each
// channel, the nodes whose hub has subscribers for it. Each node's entry
// carries the generation of its latest change, so changes that arrive out
// of order cannot undo a newer one.
type table struct {
	self string
	mu   sync.RWMutex
	by   map[string]map[string]wire.Interested // channel -> node name -> entry
	// changed is called, outside the lock, after apply changed a channel's
	// entries (Config.Changed: the channel's replica is told).
	changed func(channel string)
}

func (t *table) init(self string, changed func(channel string)) {
	t.self = self
	t.by = make(map[string]map[string]wire.Interested)
	t.changed = changed
}

// apply records one change of node's interest. An on newer than (or as new
// as) the entry replaces it; an off removes an entry no newer than itself.
func (t *table) apply(node wire.Member, c wire.InterestChange) {
	if node.Name == "" || node.Name == t.self {
		return // this node's own subscribers get messages straight from the actor
	}
	t.mu.Lock()
	nodes := t.by[c.Channel]
	cur, ok := nodes[node.Name]
	changed := false
	switch {
	case c.On && (!ok || cur.Gen <= c.Gen):
		if nodes == nil {
			nodes = make(map[string]wire.Interested)
			t.by[c.Channel] = nodes
		}
		nodes[node.Name] = wire.Interested{Node: node, Gen: c.Gen}
		changed = !ok || cur.Node != node
	case !c.On && ok && cur.Gen <= c.Gen:
		delete(nodes, node.Name)
		if len(nodes) == 0 {
			delete(t.by, c.Channel)
		}
		changed = true
	}
	t.mu.Unlock()
	if changed && t.changed != nil {
		t.changed(c.Channel)
	}
}

// each calls fn for every node interested in channel, under the read lock.
func (t *table) each(channel string, fn func(wire.Member)) {
	t.mu.RLock()
	for _, in := range t.by[channel] {
		fn(in.Node)
	}
	t.mu.RUnlock()
}

// export returns the nodes interested in channel, to hand over with it.
func (t *table) export(channel string) []wire.Interested {
	t.mu.RLock()
	defer t.mu.RUnlock()
	list := make([]wire.Interested, 0, len(t.by[channel]))
	for _, in := range t.by[channel] {
		list = append(list, in)
	}
	return list
}

// add merges handed-over interest into the table.
func (t *table) add(channel string, list []wire.Interested) {
	for _, in := range list {
		t.apply(in.Node, wire.InterestChange{Channel: channel, On: true, Gen: in.Gen})
	}
}

// drop forgets the interest in a channel handed away.
func (t *table) drop(channel string) {
	t.mu.Lock()
	delete(t.by, channel)
	t.mu.Unlock()
}

// forgetNodes removes every entry of the nodes that left.
func (t *table) forgetNodes(gone map[string]bool) {
	if len(gone) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for ch, nodes := range t.by {
		for name := range gone {
			delete(nodes, name)
		}
		if len(nodes) == 0 {
			delete(t.by, ch)
		}
	}
}
