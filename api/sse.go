package api

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
)

// sseWriteTimeout bounds one write to a stream so that a peer that stopped
// reading cannot hold a goroutine forever. It is a socket deadline, so it is
// wall-clock time by nature, not the injected clock.
const sseWriteTimeout = 30 * time.Second

// Comment frames; a comment line keeps proxies from timing the stream out.
var (
	connectedFrame = []byte(": connected\n\n")
	keepaliveFrame = []byte(": keepalive\n\n")
)

// parseSubscribe reads the channels query ({"<name>": <last id>}) and applies
// a Last-Event-ID header or lastEventId parameter on top of it.
func (s *server) parseSubscribe(r *http.Request) (map[string]int64, error) {
	q := r.URL.Query()
	raw := q.Get("channels")
	if raw == "" {
		return nil, invalid("channels is required")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &obj); err != nil || obj == nil {
		return nil, invalid(`channels must be a JSON object {"<name>": <last id>}`)
	}
	if len(obj) == 0 {
		return nil, invalid("channels is empty")
	}
	if len(obj) > s.cfg.MaxSubscribeChannels {
		return nil, invalid("too many channels (at most %d)", s.cfg.MaxSubscribeChannels)
	}
	from := make(map[string]int64, len(obj))
	for name, v := range obj {
		// ParseInt on the raw literal rejects strings, fractions and exponents.
		id, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || id < -1 {
			return nil, invalid("the last id of %q must be an integer >= -1", name)
		}
		from[name] = id
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("lastEventId")
	}
	if last == "" {
		return from, nil
	}
	return applyCursor(from, last)
}

// applyCursor overrides the ids of from with those a cursor records.
func applyCursor(from map[string]int64, last string) (map[string]int64, error) {
	c := newCursor(from)
	ids, applies, ok := decodeCursor(last, c.names)
	if !ok {
		return nil, invalid("malformed Last-Event-ID")
	}
	if applies {
		for i, name := range c.names {
			from[name] = ids[i]
		}
	}
	return from, nil
}

// handleSubscribe streams GET /presence/subscribe as Server-Sent Events.
// Every problem is answered as JSON before the stream starts. A stream over
// plain HTTP/1.1 is handed to the stream pool once its headers are written
// (see ssepool.go): it then costs no goroutine and no buffer while idle.
// Others (HTTP/2, TLS, a platform without the pool) keep their request's
// goroutine for their whole life.
func (s *server) handleSubscribe(w http.ResponseWriter, r *http.Request) {
	u, err := s.auth.identify(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	from, err := s.parseSubscribe(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	release, err := s.acquireStream(r, u)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cur := newCursor(from)
	// The subscription ends when its stream does (Close below or in the
	// pool), not with the request, which a hijacked stream outlives.
	sub, err := s.cfg.Service.Subscribe(context.Background(), u, from)
	if err == nil && sub == nil {
		err = errors.New("service returned no subscription")
	}
	if err != nil {
		release()
		s.writeError(w, r, err)
		return
	}
	st := &sseStream{sub: asQueued(sub), user: u, cur: cur, release: release}
	if !s.startStream(w) {
		st.end()
		return
	}
	if s.pool != nil && pooledRequest(r) && s.pool.adopt(w, st, s.streamLife()) {
		return
	}
	defer st.end()
	s.stream(w, r, st)
}

// sseStream is what a stream needs whichever way it is served: its
// subscription, subscriber, cursor and stream slot.
type sseStream struct {
	sub     presence.QueuedSubscription
	user    *presence.User
	cur     *cursor
	release func() // gives the stream slot back
}

// end closes the subscription and frees the stream slot.
func (st *sseStream) end() {
	st.sub.Close()
	st.release()
}

// pooledRequest reports whether the stream pool can serve r's stream: the
// pool writes the HTTP/1.1 chunked framing itself on the raw connection,
// which HTTP/2 and TLS do not allow.
func pooledRequest(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.ProtoMinor == 1 && r.TLS == nil
}

// streamLife returns the function that observes the latency of a pooled
// stream when it ends (the pool detaches the stream's statusWriter, whose
// request ends earlier), so that SSE streams count their whole life.
func (s *server) streamLife() func() {
	start := s.cfg.Clock.Now()
	observer := s.metrics.observer(pathSubscribe)
	clk := s.cfg.Clock
	return func() { observer.Observe(clk.Now().Sub(start).Seconds()) }
}

// acquireStream takes one of the node's stream slots for u's stream; a
// refusal is counted, logged at a bounded rate and answered 429.
func (s *server) acquireStream(r *http.Request, u *presence.User) (release func(), err error) {
	var client netip.Prefix
	if u.Anonymous() {
		client = clientPrefix(r, s.cfg.TrustedProxies)
	}
	free, err := s.streams.acquire(u, client)
	var refused *streamLimitError
	if errors.As(err, &refused) {
		s.metrics.refusedStreams.WithLabelValues(refused.limit).Inc()
		s.refusedStreams.log(s.log, u, client, refused)
	}
	if err != nil {
		return nil, err
	}
	// The gauge counts the streams holding a slot, so it never shows a
	// slot free before it is.
	s.metrics.streams.Inc()
	return func() {
		free()
		s.metrics.streams.Dec()
	}, nil
}

// startStream writes the stream's headers; whoever serves the stream
// writes its first comment once it does.
func (s *server) startStream(w http.ResponseWriter) bool {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w).Flush() == nil
}

// stream serves a stream on its request's goroutine: it writes events and
// keepalives until the client leaves, the subscription ends, the node
// closes its streams or a write fails.
func (s *server) stream(w http.ResponseWriter, r *http.Request, st *sseStream) {
	out := &sseWriter{w: w, rc: http.NewResponseController(w)}
	ticker := s.cfg.Clock.NewTicker(s.cfg.KeepAlive)
	defer ticker.Stop()
	// Clear the per-write deadline so it cannot outlive the stream on a
	// kept-alive connection.
	defer func() { _ = out.rc.SetWriteDeadline(time.Time{}) }()
	wake := make(chan struct{}, 1)
	st.sub.Notify(func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if !out.send(connectedFrame) {
		return
	}
	enc := eventEncoder{payloads: s.payloads}
	var evs []presence.Event
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case <-ticker.C():
			if !out.send(keepaliveFrame) {
				return
			}
		case <-wake:
			var ended bool
			evs, ended = st.sub.Take(evs[:0])
			frames := enc.appendEvents(enc.buf[:0], evs, st.user, st.cur)
			clear(evs)
			enc.buf = frames
			if len(frames) > 0 && !out.send(frames) {
				return
			}
			enc.release()
			if ended {
				return
			}
		}
	}
}

// sseWriter writes a stream's frames, one write and one flush (one system
// call) per batch.
type sseWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	deadline time.Time // the write deadline in force
}

// send writes and flushes frames under a write deadline.
func (o *sseWriter) send(frames []byte) bool {
	if o.rearm(time.Now()) {
		// Not every ResponseWriter supports deadlines (httptest's does
		// not); the stream still works without one.
		_ = o.rc.SetWriteDeadline(o.deadline)
	}
	if _, err := o.w.Write(frames); err != nil {
		return false
	}
	return o.rc.Flush() == nil
}

// rearm reports whether the write deadline must move before a write at now,
// and moves it. It moves only when less than half of sseWriteTimeout is
// left, so that a busy stream does not re-arm a timer for every batch: a
// write is still given between half and all of sseWriteTimeout.
func (o *sseWriter) rearm(now time.Time) bool {
	if o.deadline.Sub(now) >= sseWriteTimeout/2 {
		return false
	}
	o.deadline = now.Add(sseWriteTimeout)
	return true
}

// A buffer that a burst grew beyond sseKeepBuffer is dropped after its
// write, so that streams do not each hold a burst's worth of memory.
const sseKeepBuffer = 8 << 10

// eventEncoder renders the events of one stream as SSE frames into a
// buffer that is reused from batch to batch.
type eventEncoder struct {
	buf      []byte
	payloads *payloadCache
}

// appendEvents appends the frames of evs to b, in order (a subscriber
// that fell behind catches up with one write).
func (e *eventEncoder) appendEvents(b []byte, evs []presence.Event, u *presence.User, cur *cursor) []byte {
	for _, ev := range evs {
		b = e.append(b, ev, u, cur)
	}
	return b
}

// release drops a buffer that a burst made large.
func (e *eventEncoder) release() {
	if cap(e.buf) > sseKeepBuffer {
		e.buf = nil
	}
}

// encode advances the cursor and renders ev as one SSE frame; nil when the
// event must not be streamed (see append).
func (e *eventEncoder) encode(ev presence.Event, u *presence.User, cur *cursor) []byte {
	e.buf = e.append(e.buf[:0], ev, u, cur)
	if len(e.buf) == 0 {
		return nil
	}
	return e.buf
}

// append advances the cursor and appends ev's SSE frame to b; nothing when
// the event must not reach u (a message whose audience excludes u, which
// the Service should already have filtered: this is defence in depth).
func (e *eventEncoder) append(b []byte, ev presence.Event, u *presence.User, cur *cursor) []byte {
	var name string
	switch ev.Kind {
	case presence.EventMessage:
		if ev.Message == nil {
			return b
		}
		cur.set(ev.Channel, ev.Message.ID)
		if a := ev.Message.Audience; a != nil && !a.CanView(u) {
			return b
		}
		name = "message"
	case presence.EventResync:
		cur.set(ev.Channel, ev.LastID)
		name = "resync"
	case presence.EventUnavailable:
		name = "unavailable"
	default:
		return b
	}
	b = append(b, "id: "...)
	b = cur.appendEncoded(b)
	b = append(b, "\nevent: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	if ev.Kind == presence.EventMessage {
		b = e.payloads.append(b, ev.Channel, ev.Message)
	} else {
		b = append(b, `{"channel":`...)
		b = appendJSONString(b, ev.Channel)
		b = append(b, '}')
	}
	return append(b, "\n\n"...) // JSON never contains a raw newline
}

// appendMessagePayload appends the data of a message event with exactly one
// of its payload kinds, byte for byte what encoding/json writes for
// {"channel", "message_id", "data": {...}}.
func appendMessagePayload(b []byte, channel string, m *presence.Message) []byte {
	b = append(b, `{"channel":`...)
	b = appendJSONString(b, channel)
	b = append(b, `,"message_id":`...)
	b = strconv.AppendInt(b, m.ID, 10)
	switch {
	case m.CountOnly:
		b = append(b, `,"data":{"count_delta":`...)
		b = strconv.AppendInt(b, int64(m.CountDelta), 10)
	case len(m.EnteringUsers) > 0:
		b = append(b, `,"data":{"entering_users":[`...)
		for i, u := range m.EnteringUsers {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendUserInfo(b, u)
		}
		b = append(b, ']')
	default:
		b = append(b, `,"data":{"leaving_user_ids":[`...)
		for i, id := range m.LeavingUserIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, id)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...)
}

func appendUserInfo(b []byte, u presence.UserInfo) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, u.ID)
	b = append(b, `,"username":`...)
	b = appendJSONString(b, u.Username)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, u.Name)
	b = append(b, `,"avatar_template":`...)
	b = appendJSONString(b, u.AvatarTemplate)
	return append(b, '}')
}

// payloadCache shares the encoded data of recent messages between the
// streams of a node: every subscriber of a channel receives the same
// *presence.Message, so a message fanned out to 10,000 streams is encoded
// once instead of 10,000 times. It holds at most
// payloadShards*payloadShardMax messages.
type payloadCache struct {
	seed   maphash.Seed
	shards [payloadShards]payloadShard
}

const (
	payloadShards   = 16
	payloadShardMax = 64
)

type payloadShard struct {
	mu sync.Mutex
	m  map[*presence.Message][]byte
}

func newPayloadCache() *payloadCache {
	c := &payloadCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[*presence.Message][]byte, payloadShardMax)
	}
	return c
}

// append appends the data of message m of channel. Messages are immutable
// once published, so their encoding never changes.
func (c *payloadCache) append(b []byte, channel string, m *presence.Message) []byte {
	if channel != m.Channel {
		return appendMessagePayload(b, channel, m)
	}
	sh := &c.shards[maphash.Comparable(c.seed, m)%payloadShards]
	sh.mu.Lock()
	data, ok := sh.m[m]
	sh.mu.Unlock()
	if ok {
		return append(b, data...)
	}
	start := len(b)
	b = appendMessagePayload(b, channel, m)
	data = slices.Clone(b[start:])
	sh.mu.Lock()
	if len(sh.m) >= payloadShardMax {
		clear(sh.m) // the messages of a moment ago are fanned out already
	}
	sh.m[m] = data
	sh.mu.Unlock()
	return b
}
