package webhook

import (
	"bytes"
	"cmp"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/presencehq/presence/presence"
)

// Request headers.
const (
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body
	// keyed with the webhook's secret.
	SignatureHeader = "X-Presence-Signature"
	// DeliveryHeader carries the batch's unique id, the same on every try.
	DeliveryHeader = "X-Presence-Delivery"
	userAgent      = "presence-webhook/1"
)

// batch is one request's events: per channel, a run of its events in id
// order, tried until acknowledged.
type batch struct {
	delivery string
	body     []byte
	parts    []part
	events   int
	attempts int   // tries that failed
	first    int64 // unix ns of the first try
	nextAt   int64 // unix ns: retried from then
}

// part is the events of one channel in a batch.
type part struct {
	c      *chanQ
	events []event
}

// lastOf returns the id of c's last event in b.
func (b *batch) lastOf(c *chanQ) int64 {
	for _, p := range b.parts {
		if p.c == c {
			return p.events[len(p.events)-1].id
		}
	}
	return 0
}

// request is a batch on its way, with the webhook it goes to.
type request struct {
	dst    *dest
	b      *batch
	url    string
	secret string
}

// due appends to out the requests dst may start at now: retries whose
// time came, oldest first, then new batches when one is full or its oldest
// event waited MaxWait. While dst fails, one request at a time probes it,
// none before its backoff passed, and a probe that retried a batch is
// followed by one of new events: a receiver that rejects one channel's
// events must not hold every other channel of the destination until that
// batch gives up.
func (d *Dispatcher) due(dst *dest, w *presence.Webhook, now int64, out []request) []request {
	if now < dst.gate {
		return out
	}
	limit := d.cfg.MaxInFlight
	if dst.failures > 0 {
		limit = 1
	}
	start := func(b *batch) {
		dst.inflight++
		retry := b.first != 0
		if retry {
			dst.m.retries.Inc()
		} else {
			b.first = now
		}
		dst.probedRetry = dst.failures > 0 && retry
		out = append(out, request{dst: dst, b: b, url: w.URL, secret: w.Secret})
	}
	if dst.probedRetry {
		d.startNew(dst, now, limit, start)
	}
	for dst.inflight < limit {
		i := slices.IndexFunc(dst.waiting, func(b *batch) bool { return b.nextAt <= now })
		if i < 0 {
			break
		}
		b := dst.waiting[i]
		dst.waiting = slices.Delete(dst.waiting, i, i+1)
		start(b)
	}
	d.startNew(dst, now, limit, start)
	return out
}

// startNew starts new batches of dst while it has room below limit and a
// batch is full or its oldest event waited MaxWait.
func (d *Dispatcher) startNew(dst *dest, now int64, limit int, start func(*batch)) {
	for dst.inflight < limit && dst.readyEvents > 0 &&
		(dst.readyEvents >= d.cfg.MaxBatch || now-dst.openSince >= int64(d.cfg.MaxWait)) {
		b, err := d.build(dst)
		if err != nil {
			d.log.Error("webhook batch not encoded", "prefix", dst.prefix, "err", err)
			return
		}
		start(b)
	}
}

// build takes a batch of up to MaxBatch events from the channels ready
// the longest. A channel whose events do not all fit keeps the rest
// queued behind the batch.
func (d *Dispatcher) build(dst *dest) (*batch, error) {
	b := &batch{delivery: newDeliveryID()}
	var wire []wireEvent
	for b.events < d.cfg.MaxBatch {
		c := dst.popReady()
		if c == nil {
			break
		}
		d.unready(c)
		take := min(len(c.pending), d.cfg.MaxBatch-b.events)
		events := slices.Clone(c.pending[:take])
		rest := copy(c.pending, c.pending[take:])
		clear(c.pending[rest:])
		c.pending = shrink(c.pending[:rest])
		c.batch = b
		b.parts = append(b.parts, part{c: c, events: events})
		b.events += take
		for i := range events {
			wire = append(wire, events[i].wire(c.name))
		}
	}
	body, err := encodeBody(wire)
	if err != nil {
		d.release(dst, b)
		return nil, err
	}
	b.body = body
	return b, nil
}

// send makes one request and settles its batch.
func (d *Dispatcher) send(r request) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RequestTimeout)
	defer cancel()
	err := post(ctx, d.cfg.Client, r)
	if d.ctx.Err() != nil {
		return // closing: nothing is settled any more
	}
	d.finish(r.dst, r.b, err)
}

// post sends r's batch: nil when the destination answered 2xx.
func post(ctx context.Context, client *http.Client, r request) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(r.b.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(DeliveryHeader, r.b.delivery)
	req.Header.Set(SignatureHeader, Sign([]byte(r.secret), r.b.body))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	// A little is read, so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// ack is an acknowledged position to record in a channel's state.
type ack struct {
	channel string
	id      int64
}

// finish settles a request: acknowledged, its channels go on and their
// positions move; failed, the batch waits for a retry, or is summarised
// once it failed for GiveUpAfter.
func (d *Dispatcher) finish(dst *dest, b *batch, err error) {
	now := d.cfg.Clock.Now().UnixNano()
	var acks []ack
	d.mu.Lock()
	dst.inflight--
	if err == nil {
		acks = d.delivered(dst, b, now)
	} else {
		d.failed(dst, b, now, err)
	}
	d.mu.Unlock()
	for _, a := range acks {
		if err := d.cfg.Acknowledge(a.channel, a.id); err != nil {
			// The next acknowledgement covers this one; meanwhile a new
			// holder would deliver a little again.
			d.log.Debug("recording a webhook position failed", "channel", a.channel, "id", a.id, "err", err)
		}
	}
	if err == nil {
		// Counted once the positions are on their way to the channels: a
		// reader of the metric knows that much.
		dst.m.deliveries.Inc()
		dst.m.events.Add(float64(b.events))
	}
	d.kick()
}

// delivered settles an acknowledged batch and returns the positions to
// record.
func (d *Dispatcher) delivered(dst *dest, b *batch, now int64) []ack {
	if dst.failures >= 2 {
		// The destination is back after failing: what waits goes now.
		d.log.Info("webhook destination answers again", "prefix", dst.prefix, "failures", dst.failures, "waiting", len(dst.waiting))
		for _, w := range dst.waiting {
			w.nextAt = now
		}
	}
	dst.failures, dst.gate, dst.probedRetry = 0, 0, false
	acks := make([]ack, 0, len(b.parts))
	for _, p := range b.parts {
		acks = append(acks, ack{channel: p.c.name, id: p.events[len(p.events)-1].id})
	}
	d.release(dst, b)
	return acks
}

// release frees b's channels: they go on with their queued events, or are
// forgotten.
func (d *Dispatcher) release(dst *dest, b *batch) {
	for _, p := range b.parts {
		c := p.c
		c.batch = nil
		dst.queued -= len(p.events)
		if c.handedOver || len(c.pending) == 0 {
			d.forget(c)
			continue
		}
		d.makeReady(c)
	}
}

// failed settles a batch the destination did not acknowledge.
func (d *Dispatcher) failed(dst *dest, b *batch, now int64, err error) {
	dst.failures++
	dst.gate = now + int64(d.backoff(dst.failures))
	b.attempts++
	dst.m.failures.Inc()
	if dst.failures == 1 || dst.failures%10 == 0 {
		d.log.Warn("webhook delivery failed; retrying", "prefix", dst.prefix, "delivery", b.delivery,
			"events", b.events, "attempts", b.attempts, "failures", dst.failures, "err", err)
	}
	switch {
	case !slices.ContainsFunc(b.parts, func(p part) bool { return !p.c.handedOver }):
		d.release(dst, b) // every channel went elsewhere: their new holders deliver
	case now-b.first >= int64(d.cfg.GiveUpAfter):
		d.giveUp(dst, b, now)
	default:
		b.nextAt = now + int64(d.backoff(b.attempts))
		i, _ := slices.BinarySearchFunc(dst.waiting, b.first, func(w *batch, first int64) int { return cmp.Compare(w.first, first) })
		dst.waiting = slices.Insert(dst.waiting, i, b)
	}
}

// giveUp replaces each part of b, which failed for GiveUpAfter, by one
// resync event at the head of its channel's queue, retried like any
// event: the receiver, once back, reads the channels' states.
func (d *Dispatcher) giveUp(dst *dest, b *batch, now int64) {
	d.log.Warn("webhook batch undelivered for too long: its events are summarised as resyncs", "prefix", dst.prefix,
		"delivery", b.delivery, "events", b.events, "attempts", b.attempts, "since", time.Unix(0, b.first))
	for _, p := range b.parts {
		c := p.c
		c.batch = nil
		dst.queued -= len(p.events)
		if c.handedOver {
			d.forget(c)
			continue
		}
		ev := summary(p.events[len(p.events)-1].id, ReasonExpired, p.events[0].since)
		ev.queued = now
		c.pending = slices.Insert(c.pending, 0, ev)
		dst.queued++
		d.countResync(dst, ev)
		if len(c.pending) > d.cfg.MaxChannelQueue {
			d.summarise(c, ReasonOverflow)
		}
		d.makeReady(c)
	}
}

// backoff returns the pause after the n-th failure in a row: RetryBase
// doubled n-1 times, at most RetryMax, between half and all of it
// (jitter, so that the batches of many nodes do not retry together).
func (d *Dispatcher) backoff(n int) time.Duration {
	delay := d.cfg.RetryMax
	if shift := n - 1; shift < 32 && d.cfg.RetryBase<<shift < delay && d.cfg.RetryBase<<shift > 0 {
		delay = d.cfg.RetryBase << shift
	}
	return delay/2 + rand.N(delay/2+1)
}

// newDeliveryID returns a random 128-bit id in hex.
func newDeliveryID() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}
