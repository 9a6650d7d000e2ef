package fanout

import (
	"context"
	"slices"
	"sync"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// outbound holds one push queue per remote node with subscribers.
type outbound struct {
	cfg *Config
	// unfollow removes the interest of a node that answered a push with
	// channels it no longer follows.
	unfollow func(node wire.Member, c wire.InterestChange)
	mu       sync.Mutex
	queues   map[string]*outQueue
}

// outQueue is the messages waiting for one node, sent in order by one
// goroutine, a batch per call.
type outQueue struct {
	to   wire.Member
	wake chan struct{} // buffered 1: messages arrived
	stop chan struct{} // closed when the node left

	mu       sync.Mutex
	buf      []*presence.Message
	enq, fin uint64        // messages queued / done with (sent or dropped)
	progress chan struct{} // closed and replaced whenever fin grows
}

func (o *outbound) init(cfg *Config, unfollow func(wire.Member, wire.InterestChange)) {
	o.cfg, o.unfollow = cfg, unfollow
	o.queues = make(map[string]*outQueue)
}

// queue returns to's queue, starting its sender if needed.
func (o *outbound) queue(to wire.Member) *outQueue {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queues[to.Name]
	if q == nil || q.to != to {
		if q != nil {
			close(q.stop) // the node came back at another address
		}
		q = &outQueue{to: to, wake: make(chan struct{}, 1), stop: make(chan struct{}), progress: make(chan struct{})}
		o.queues[to.Name] = q
		o.cfg.Go(func() { o.send(q) })
	}
	return q
}

// enqueue adds m to to's queue without blocking; a full queue drops it (the
// node's subscribers will see a gap and resync).
func (o *outbound) enqueue(to wire.Member, m *presence.Message) {
	q := o.queue(to)
	q.mu.Lock()
	q.enq++
	if len(q.buf) >= o.cfg.PushQueue {
		q.finishLocked(1)
		q.mu.Unlock()
		o.cfg.Dropped.Inc()
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
		case <-o.cfg.Ctx.Done():
			return
		}
		for o.sendBatch(q) {
		}
	}
}

// sendBatch sends up to PushBatch queued messages; false when none was left.
func (o *outbound) sendBatch(q *outQueue) bool {
	q.mu.Lock()
	n := min(len(q.buf), o.cfg.PushBatch)
	if n == 0 {
		q.mu.Unlock()
		return false
	}
	batch := slices.Clone(q.buf[:n])
	clear(q.buf[:n])
	q.buf = q.buf[n:]
	q.mu.Unlock()

	ctx, cancel := context.WithTimeout(o.cfg.Ctx, o.cfg.CallTimeout)
	req := wire.PushRequest{From: o.cfg.Self.Name, Messages: batch}
	resp, err := o.cfg.Call(ctx, q.to, wire.MethodPush, req.Encode)
	cancel()
	if err != nil {
		o.cfg.Dropped.Add(float64(n))
		o.cfg.Logger.Debug("push to subscriber node failed", "to", q.to.Name, "messages", n, "err", err)
	} else if len(resp) > 0 {
		o.unwanted(q.to, resp)
	}
	q.mu.Lock()
	q.finishLocked(n)
	q.mu.Unlock()
	return true
}

// unwanted removes the interest of a node that no longer follows channels.
func (o *outbound) unwanted(to wire.Member, resp []byte) {
	reply, err := wire.DecodePushReply(resp)
	if err != nil {
		o.cfg.Logger.Warn("bad push reply", "from", to.Name, "err", err)
		return
	}
	for _, c := range reply.Unwanted {
		c.On = false
		o.unfollow(to, c)
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
