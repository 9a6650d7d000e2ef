package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// updateBatcher combines the updates forwarded to one node at the same
// time into one call (MethodUpdate carries a batch). A caller never waits
// for company: with no batch in flight to the node its update leaves at
// once; otherwise it joins the next batch, sent when the one in flight
// returns. Under load, many heartbeats share one frame, one served
// goroutine and one wake-up on each side (measured: 2.4 times the
// throughput of a call per update, against 1.2 times for four batches in
// flight or for batches served in parallel).
//
// The node serves a batch's updates in order, so a slow one (a channel
// whose config comes from a slow callback) delays its batch. When the
// batch in flight is older than Config.ForwardStall, later updates go in a
// new batch beside it, up to maxInflight: a stuck batch never stalls the
// traffic to its node.
type updateBatcher struct {
	batcherConfig
	mu     sync.Mutex
	queues map[Member]*updateQueue
	items  sync.Pool // *updateItem, reused once their caller read the answer
}

// batcherConfig is what an updateBatcher needs.
type batcherConfig struct {
	call wire.Call
	// spawn runs a batch's sender; false when the router is closing.
	spawn func(func()) bool
	// ctx ends with the router: the calls in flight end with it.
	ctx context.Context
	// max, timeout and stall are Config.ForwardBatch, ForwardTimeout and
	// ForwardStall.
	max            int
	timeout, stall time.Duration
	// forwarded counts the updates sent.
	forwarded prometheus.Counter
}

// maxInflight bounds the batches in flight to one node.
const maxInflight = 8

// updateQueue holds the updates waiting for one node.
type updateQueue struct {
	to      Member
	mu      sync.Mutex
	items   []*updateItem
	sending int       // drain goroutines running
	newest  time.Time // when the latest batch left
}

// updateItem is one forwarded update and, once done is signalled, its
// answer. Items are pooled: a caller that read its answer returns it.
type updateItem struct {
	req  wire.UpdateRequest
	vals []bool
	err  error
	done chan struct{} // buffered 1: receives one signal per use
}

func (b *updateBatcher) getItem(req wire.UpdateRequest) *updateItem {
	it, ok := b.items.Get().(*updateItem)
	if !ok {
		it = &updateItem{done: make(chan struct{}, 1)}
	}
	it.req = req
	return it
}

// putItem recycles an item whose signal was received: nothing else refers
// to it any more.
func (b *updateBatcher) putItem(it *updateItem) {
	*it = updateItem{done: it.done}
	b.items.Put(it)
}

func (b *updateBatcher) init(cfg batcherConfig) {
	b.batcherConfig = cfg
	b.queues = make(map[Member]*updateQueue)
}

func (b *updateBatcher) queue(to Member) *updateQueue {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[to]
	if q == nil {
		q = &updateQueue{to: to}
		b.queues[to] = q
	}
	return q
}

// forgetNodes drops the queues of nodes that left; their drains finish on
// their own.
func (b *updateBatcher) forgetNodes(gone map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for m := range b.queues {
		if gone[m.Name] {
			delete(b.queues, m)
		}
	}
}

// do sends req to to within a batch and returns the answers of its present
// channels.
func (b *updateBatcher) do(ctx context.Context, to Member, req wire.UpdateRequest) ([]bool, error) {
	it := b.getItem(req)
	q := b.queue(to)
	q.mu.Lock()
	q.items = append(q.items, it)
	start := q.sending == 0 || q.sending < maxInflight && time.Since(q.newest) > b.stall
	if start {
		q.sending++
	}
	q.mu.Unlock()
	if start && !b.spawn(func() { b.drain(q) }) {
		return nil, fmt.Errorf("%w: router closed", presence.ErrUnavailable)
	}
	select {
	case <-it.done:
		vals, err := it.vals, it.err
		b.putItem(it)
		return vals, err
	case <-ctx.Done():
		return nil, ctx.Err() // the batch still holds it: not recycled
	}
}

// drain sends the queue's updates, a batch per call, until it is empty.
func (b *updateBatcher) drain(q *updateQueue) {
	for {
		q.mu.Lock()
		n := min(len(q.items), b.max)
		if n == 0 {
			q.sending--
			q.mu.Unlock()
			return
		}
		batch := slices.Clone(q.items[:n])
		clear(q.items[:n])
		q.items = q.items[n:]
		q.newest = time.Now()
		q.mu.Unlock()
		b.send(q.to, batch)
	}
}

// send makes one call for batch and hands each item its answer.
func (b *updateBatcher) send(to Member, batch []*updateItem) {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	b.forwarded.Add(float64(len(batch)))
	resp, err := b.call(ctx, to, wire.MethodUpdate, func(e *wire.Encoder) {
		wire.EncodeUpdateBatch(e, len(batch), func(i int) *wire.UpdateRequest { return &batch[i].req })
	})
	if err == nil {
		err = decodeBatchResults(resp, to.Name, batch)
	}
	for _, it := range batch {
		if err != nil {
			it.vals, it.err = nil, err
		} else if it.err == nil && len(it.vals) != len(it.req.Present) {
			it.vals, it.err = nil, wire.ErrMalformed
		}
		it.done <- struct{}{} // the item is its caller's again from here
	}
}

// decodeBatchResults hands each item of batch its answer from b, the reply
// of the node from.
func decodeBatchResults(b []byte, from string, batch []*updateItem) error {
	results, err := wire.DecodeUpdateResults(b, from)
	if err != nil {
		return err
	}
	if len(results) != len(batch) {
		return wire.ErrMalformed
	}
	for i, it := range batch {
		it.vals, it.err = results[i].Vals, results[i].Err
	}
	return nil
}

// header is what this node attaches to a call it forwards after hops.
func (r *Router) header(hops int) wire.Header {
	deadline := r.cfg.Clock.Now().Add(r.cfg.ForwardTimeout).UnixNano()
	return wire.Header{Epoch: r.view.Load().epoch, Hops: hops + 1, Deadline: deadline}
}

// parallel runs fn for each item, the last one on the calling goroutine.
func parallel[T any](items []T, fn func(T)) {
	if len(items) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, it := range items[:len(items)-1] {
		wg.Go(func() { fn(it) })
	}
	fn(items[len(items)-1])
	wg.Wait()
}

// forwardErrors collects the errors of the shares of a request forwarded
// in parallel: one that retrying cannot cure decides, else the first.
type forwardErrors struct{ first, hard error }

func (f *forwardErrors) add(err error) {
	if f.first == nil {
		f.first = err
	}
	if f.hard == nil && !retryable(err) {
		f.hard = err
	}
}

func (f *forwardErrors) err() error {
	if f.hard != nil {
		return f.hard
	}
	return f.first
}

// retryPolicy is how the node a request entered retries: Config.Retries
// times, after a pause of RetryBackoff doubling with each attempt.
type retryPolicy struct {
	retries int
	backoff time.Duration
}

// withRetries runs attempt on share until it succeeds. Only the node the
// request entered (hops 0) retries: after a retryable error it pauses and
// runs attempt again on the share that failed; what is left after the
// retries becomes the caller's error (finalError).
func withRetries[S any](ctx context.Context, p retryPolicy, hops int, share S, attempt func(S) (S, error)) error {
	for n := 0; ; n++ {
		retry, err := attempt(share)
		if err == nil {
			return nil
		}
		if !p.again(ctx, err, hops, n) {
			return finalError(err, hops)
		}
		share = retry
	}
}

// again decides whether the entry node retries after err, pausing first
// (wall time, since it paces network calls).
func (p retryPolicy) again(ctx context.Context, err error, hops, attempt int) bool {
	if hops != 0 || attempt >= p.retries || !retryable(err) || ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(p.backoff << attempt)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryable reports whether a failed forward may succeed if routed again:
// the owner moved, was busy handing the channel over, or was unreachable
// (membership is about to say so).
func retryable(err error) bool {
	return errors.Is(err, presence.ErrMoved) || errors.Is(err, wire.ErrBusy) || errors.Is(err, transport.ErrPeerUnavailable)
}

// finalError turns what is left after the retries into the error the
// caller sees. A forwarding node passes presence.ErrMoved back for the entry
// node to retry; at the entry node a channel that keeps moving, a busy or
// unreachable owner, or an error without meaning to the API becomes
// presence.ErrUnavailable (503). Other sentinels and context errors stay.
func finalError(err error, hops int) error {
	switch {
	case hops != 0 && errors.Is(err, presence.ErrMoved):
		return err
	case retryable(err), !wire.IsSentinel(err) && !isContextErr(err):
		return fmt.Errorf("%w: %w", presence.ErrUnavailable, err)
	}
	return err
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
