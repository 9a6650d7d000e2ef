package webhook

// The queues of the channels and destinations. Every function here runs
// with the Dispatcher's lock held.

// chanQ is the queue of one channel held here.
type chanQ struct {
	name string
	dest *dest
	// high is the highest message id of the channel this node handed to
	// the dispatcher (queued, filtered out, or delivered): a message at or
	// below it is not new.
	high    int64
	pending []event // not in a batch yet, in id order
	// batch holds the channel's earlier events, in flight or waiting for a
	// retry: the pending events wait for its acknowledgement.
	batch *batch
	ready bool // in dest.ready: pending events and no batch
	// handedOver: the channel went to another node, which delivers from
	// the position it was given; only the batch remains here.
	handedOver bool
}

// dest is one destination: a prefix's webhook.
type dest struct {
	prefix string
	sample string // a channel of the prefix, to look the webhook up with
	chans  map[string]*chanQ
	// ready lists channels in the order they became ready (entries whose
	// ready flag was cleared since are skipped).
	ready       []*chanQ
	readyEvents int   // events of the ready channels
	openSince   int64 // unix ns: the oldest ready event was queued then; 0 when none is ready
	queued      int   // events pending or in batches
	waiting     []*batch
	inflight    int
	failures    int   // requests failed in a row
	gate        int64 // unix ns: no request starts before
	// probedRetry: the last request started while failing was a retry,
	// so the next probe carries new events if any are due.
	probedRetry bool
	// boundAt is queued after the last pass that summarised channels for
	// the destination's bound: the next pass waits until it grew.
	boundAt int
	m       destMetrics
}

// enqueue appends ev to c's queue and keeps the bounds.
func (d *Dispatcher) enqueue(c *chanQ, ev event, now int64) {
	ev.queued = now
	c.pending = append(c.pending, ev)
	dst := c.dest
	dst.queued++
	switch {
	case c.ready:
		dst.readyEvents++
	case c.batch == nil:
		d.makeReady(c)
	}
	if ev.resync() {
		d.countResync(dst, ev)
	}
	if len(c.pending) > d.cfg.MaxChannelQueue {
		d.summarise(c, ReasonOverflow)
	}
	if dst.queued > d.cfg.MaxDestinationQueue && dst.queued > dst.boundAt+d.cfg.MaxDestinationQueue/10 {
		d.keepBound(dst)
	}
}

// makeReady lists c, which has pending events and no batch, as ready.
func (d *Dispatcher) makeReady(c *chanQ) {
	if c.ready || c.batch != nil || len(c.pending) == 0 {
		return
	}
	c.ready = true
	dst := c.dest
	dst.ready = append(dst.ready, c)
	dst.readyEvents += len(c.pending)
	if oldest := c.pending[0].queued; dst.openSince == 0 || oldest < dst.openSince {
		dst.openSince = oldest
	}
}

// unready takes c off the ready list (lazily: popReady skips it).
func (d *Dispatcher) unready(c *chanQ) {
	if !c.ready {
		return
	}
	c.ready = false
	c.dest.readyEvents -= len(c.pending)
	if c.dest.readyEvents == 0 {
		c.dest.openSince = 0
	}
}

// popReady returns the channel ready the longest, or nil.
func (dst *dest) popReady() *chanQ {
	for len(dst.ready) > 0 {
		c := dst.ready[0]
		dst.ready[0] = nil
		dst.ready = dst.ready[1:]
		if c.ready {
			return c
		}
	}
	return nil
}

// summarise replaces c's pending events by one resync event standing for
// them all (the newest id, the oldest time).
func (d *Dispatcher) summarise(c *chanQ, reason string) {
	n := len(c.pending)
	if n < 2 && (n == 0 || c.pending[0].resync()) {
		return
	}
	first, last := c.pending[0], c.pending[n-1]
	ev := summary(last.id, reason, first.since)
	ev.queued = first.queued
	clear(c.pending)
	c.pending = append(c.pending[:0], ev)
	c.dest.queued -= n - 1
	if c.ready {
		c.dest.readyEvents -= n - 1
	}
	d.countResync(c.dest, ev)
	c.pending = shrink(c.pending)
}

// keepBound summarises channels of dst, the longest queues first in no
// particular order, until it queues a tenth less than its bound or every
// channel queues at most one event beyond its batch.
func (d *Dispatcher) keepBound(dst *dest) {
	target := d.cfg.MaxDestinationQueue - d.cfg.MaxDestinationQueue/10
	for _, c := range dst.chans {
		if dst.queued <= target {
			break
		}
		if len(c.pending) > 1 {
			d.summarise(c, ReasonOverflow)
		}
	}
	dst.boundAt = dst.queued
	d.log.Warn("webhook destination queue at its bound: events summarised as resyncs",
		"prefix", dst.prefix, "queued", dst.queued, "bound", d.cfg.MaxDestinationQueue)
}

// dropPending forgets c's pending events.
func (d *Dispatcher) dropPending(c *chanQ) {
	d.unready(c)
	c.dest.queued -= len(c.pending)
	clear(c.pending)
	c.pending = nil
}

// forget removes c from the tables when nothing of it is left.
func (d *Dispatcher) forget(c *chanQ) {
	if c.batch != nil || len(c.pending) > 0 && !c.handedOver {
		return
	}
	if d.chans[c.name] == c {
		delete(d.chans, c.name)
	}
	if c.dest.chans[c.name] == c {
		delete(c.dest.chans, c.name)
	}
}

// shrink gives back the array of a queue that grew large and emptied.
func shrink(q []event) []event {
	if cap(q) > 64 && len(q) < cap(q)/4 {
		return append([]event(nil), q...)
	}
	return q
}
