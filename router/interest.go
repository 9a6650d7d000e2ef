package router

import (
	"context"
	"slices"
	"sync"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// interestTable is the owner's side of cross-node subscriptions: for each
// channel, the nodes whose hub has subscribers for it. Each node's entry
// carries the generation of its latest change, so changes that arrive out
// of order cannot undo a newer one.
type interestTable struct {
	self string
	mu   sync.RWMutex
	by   map[string]map[string]wire.Interested // channel -> node name -> entry
	// changed is called, outside the lock, after apply changed a channel's
	// entries (the router tells the channel's replica).
	changed func(channel string)
}

func (t *interestTable) init(self string, changed func(channel string)) {
	t.self = self
	t.by = make(map[string]map[string]wire.Interested)
	t.changed = changed
}

// apply records one change of node's interest. An on newer than (or as new
// as) the entry replaces it; an off removes an entry no newer than itself.
func (t *interestTable) apply(node Member, c wire.InterestChange) {
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
func (t *interestTable) each(channel string, fn func(Member)) {
	t.mu.RLock()
	for _, in := range t.by[channel] {
		fn(in.Node)
	}
	t.mu.RUnlock()
}

// export returns the nodes interested in channel, to hand over with it.
func (t *interestTable) export(channel string) []wire.Interested {
	t.mu.RLock()
	defer t.mu.RUnlock()
	list := make([]wire.Interested, 0, len(t.by[channel]))
	for _, in := range t.by[channel] {
		list = append(list, in)
	}
	return list
}

// add merges handed-over interest into the table.
func (t *interestTable) add(channel string, list []wire.Interested) {
	for _, in := range list {
		t.apply(in.Node, wire.InterestChange{Channel: channel, On: true, Gen: in.Gen})
	}
}

// drop forgets the interest in a channel handed away.
func (t *interestTable) drop(channel string) {
	t.mu.Lock()
	delete(t.by, channel)
	t.mu.Unlock()
}

// forgetNodes removes every entry of the nodes that left.
func (t *interestTable) forgetNodes(gone map[string]bool) {
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

// publish is the router's side of the engine's Publisher: a message of a
// channel held here goes to the local hub and, in order, to the push queue
// of every interested node. Messages of a channel frozen for a hand-off are
// dropped: the new owner publishes from the exported state.
func (r *Router) publish(m *presence.Message) {
	if r.routes.frozen(m.Channel) {
		return
	}
	r.feed.deliver(m)
	r.interest.each(m.Channel, func(to Member) { r.out.enqueue(to, m) })
}

// outbound holds one push queue per remote node with subscribers.
type outbound struct {
	r      *Router
	mu     sync.Mutex
	queues map[string]*outQueue
}

// outQueue is the messages waiting for one node, sent in order by one
// goroutine, a batch per call.
type outQueue struct {
	to   Member
	wake chan struct{} // buffered 1: messages arrived
	stop chan struct{} // closed when the node left

	mu       sync.Mutex
	buf      []*presence.Message
	enq, fin uint64        // messages queued / done with (sent or dropped)
	progress chan struct{} // closed and replaced whenever fin grows
}

func (o *outbound) init(r *Router) {
	o.r = r
	o.queues = make(map[string]*outQueue)
}

// queue returns to's queue, starting its sender if needed.
func (o *outbound) queue(to Member) *outQueue {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queues[to.Name]
	if q == nil || q.to != to {
		if q != nil {
			close(q.stop) // the node came back at another address
		}
		q = &outQueue{to: to, wake: make(chan struct{}, 1), stop: make(chan struct{}), progress: make(chan struct{})}
		o.queues[to.Name] = q
		o.r.spawn(func() { o.send(q) })
	}
	return q
}

// enqueue adds m to to's queue without blocking; a full queue drops it (the
// node's subscribers will see a gap and resync).
func (o *outbound) enqueue(to Member, m *presence.Message) {
	q := o.queue(to)
	q.mu.Lock()
	q.enq++
	if len(q.buf) >= o.r.cfg.PushQueue {
		q.finishLocked(1)
		q.mu.Unlock()
		o.r.m.pushDropped.Inc()
		return
	}
	q.buf = append(q.buf, m)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *outQueue) finishLocked(n int) {
	q.fin += uint64(n)
	close(q.progress)
	q.progress = make(chan struct{})
}

// send pushes q's messages until the node leaves or the router closes.
func (o *outbound) send(q *outQueue) {
	for {
		select {
		case <-q.wake:
		case <-q.stop:
			return
		case <-o.r.ctx.Done():
			return
		}
		for o.sendBatch(q) {
		}
	}
}

// sendBatch sends up to PushBatch queued messages; false when none was left.
func (o *outbound) sendBatch(q *outQueue) bool {
	q.mu.Lock()
	n := min(len(q.buf), o.r.cfg.PushBatch)
	if n == 0 {
		q.mu.Unlock()
		return false
	}
	batch := slices.Clone(q.buf[:n])
	clear(q.buf[:n])
	q.buf = q.buf[n:]
	q.mu.Unlock()

	ctx, cancel := context.WithTimeout(o.r.ctx, o.r.cfg.HandoffTimeout)
	req := wire.PushRequest{From: o.r.self.Name, Messages: batch}
	resp, err := o.r.calls.Call(ctx, q.to, wire.MethodPush, req.Encode)
	cancel()
	if err != nil {
		o.r.m.pushDropped.Add(float64(n))
		o.r.log.Debug("push to subscriber node failed", "to", q.to.Name, "messages", n, "err", err)
	} else if len(resp) > 0 {
		o.unwanted(q.to, resp)
	}
	q.mu.Lock()
	q.finishLocked(n)
	q.mu.Unlock()
	return true
}

// unwanted removes the interest of a node that no longer follows channels.
func (o *outbound) unwanted(to Member, resp []byte) {
	reply, err := wire.DecodePushReply(resp)
	if err != nil {
		o.r.log.Warn("bad push reply", "from", to.Name, "err", err)
		return
	}
	for _, c := range reply.Unwanted {
		c.On = false
		o.r.interest.apply(to, c)
	}
}

// flush waits until the messages queued so far for nodes have been sent or
// dropped, or ctx ends: a channel handed over after flush cannot have its
// new owner's messages overtake its old owner's.
func (o *outbound) flush(ctx context.Context, nodes []wire.Interested) {
	for _, in := range nodes {
		o.mu.Lock()
		q := o.queues[in.Node.Name]
		o.mu.Unlock()
		if q != nil && !q.flush(ctx) {
			return
		}
	}
}

// flush waits for q's messages queued so far; false when ctx ended.
func (q *outQueue) flush(ctx context.Context) bool {
	q.mu.Lock()
	want := q.enq
	for q.fin < want {
		c := q.progress
		q.mu.Unlock()
		select {
		case <-c:
		case <-q.stop:
			return true
		case <-ctx.Done():
			return false
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return true
}

// forgetNodes stops the queues of nodes that left; their messages are lost.
func (o *outbound) forgetNodes(gone map[string]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for name := range gone {
		if q := o.queues[name]; q != nil {
			close(q.stop)
			delete(o.queues, name)
		}
	}
}
