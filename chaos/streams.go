package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of StreamConfig.
const (
	DefaultStreamConnectTimeout = 3 * time.Second
	// DefaultStreamIdleTimeout exceeds the contract's 25 s keepalive.
	DefaultStreamIdleTimeout = 35 * time.Second
	DefaultStreamBackoff     = 200 * time.Millisecond
	maxStreamBackoff         = 2 * time.Second
	// minHealthyStream is how long a connection must last to reset the
	// backoff.
	minHealthyStream = time.Second
)

// StreamConfig configures a StreamChecker.
type StreamConfig struct {
	URLs []string // every node; each is home to PerNode streams; required
	// Fallback lists more nodes streams may fail over to without being home
	// to any stream.
	Fallback []string
	Channels []string // channels every stream follows; required
	PerNode  int      // streams per node; 0 = 1
	Token    string   // bearer token; "" = anonymous (public channels)
	// ConnectTimeout bounds a connection until its answer's headers; 0 =
	// DefaultStreamConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout drops a connection that sent nothing, not even a
	// keepalive, for that long; 0 = DefaultStreamIdleTimeout.
	IdleTimeout time.Duration
	// Backoff is the pause after every URL failed once, doubling; 0 =
	// DefaultStreamBackoff.
	Backoff time.Duration
	// OnEvent, if set, sees every event of every stream, from the stream's
	// goroutine, with the stream's name ("<home URL>#<n>").
	OnEvent func(stream string, ev Event)
	Client  *http.Client // nil = a client without an overall timeout
	Logger  *slog.Logger // nil = slog.Default()
	// Exchanges, if set, records every connection attempt (its status and
	// the time to the answer's headers) and every stream a node ended.
	Exchanges *Exchanges
}

// StreamStats counts what the streams received.
type StreamStats struct {
	Streams     int      // streams running
	Connected   int      // of those, with an open connection now
	Away        int      // of those connected, to a node other than their home
	Messages    int64    // message events
	Resyncs     int64    // resync events
	Unavailable int64    // unavailable events (the checked channels exist: counted as violations too)
	Violations  int64    // broken id invariants and unavailable events
	Connections int64    // connections a node accepted (each stream's first included)
	Refused     int64    // connection attempts that failed (node down, 503, timeout)
	Examples    []string // the first violations, for the report
}

// StreamChecker keeps subscription streams open on every node, reconnects
// them with Last-Event-ID when they drop (to another node when theirs is
// down) and checks every channel's ids with a Sequence per stream.
type StreamChecker struct {
	cfg    StreamConfig
	query  string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	streams []*stream

	messages, resyncs, unavailable, violations, connections, refused atomic.Int64

	mu       sync.Mutex
	examples []string
}

// stream is one subscriber: one connection at a time.
type stream struct {
	name string
	home string
	seq  *Sequence // used by the stream's goroutine only
	last string    // Last-Event-ID; the stream's goroutine only

	mu        sync.Mutex
	current   string             // URL of the open connection; "" = none
	dropConn  context.CancelFunc // ends the open connection
	connected bool
}

// StartStreams opens the streams; they run until Close or ctx ends.
func StartStreams(ctx context.Context, cfg StreamConfig) (*StreamChecker, error) {
	if len(cfg.URLs) == 0 || len(cfg.Channels) == 0 {
		return nil, errors.New("chaos: StreamConfig needs URLs and Channels")
	}
	if cfg.PerNode == 0 {
		cfg.PerNode = 1
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultStreamConnectTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultStreamIdleTimeout
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultStreamBackoff
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: NewHTTPClient().Transport}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	from := make(map[string]int64, len(cfg.Channels))
	for _, ch := range cfg.Channels {
		from[ch] = -1 // new messages only
	}
	enc, err := json.Marshal(from)
	if err != nil {
		return nil, err
	}
	s := &StreamChecker{cfg: cfg, query: "/presence/subscribe?channels=" + url.QueryEscape(string(enc))}
	ctx, s.cancel = context.WithCancel(ctx)
	for _, home := range cfg.URLs {
		for i := range cfg.PerNode {
			st := &stream{name: fmt.Sprintf("%s#%d", home, i), home: home, seq: NewSequence()}
			s.streams = append(s.streams, st)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.run(ctx, st)
			}()
		}
	}
	return s, nil
}

// Close ends every stream and waits for them.
func (s *StreamChecker) Close() {
	s.cancel()
	s.wg.Wait()
}

// WaitConnected waits until every stream has an open connection.
func (s *StreamChecker) WaitConnected(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		st := s.Stats()
		if st.Connected == st.Streams {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos: %d of %d streams connected: %w", st.Connected, st.Streams, ctx.Err())
		case <-t.C:
		}
	}
}

// Rehome drops the connections of streams that run away from their home
// node; they reconnect, home first, resuming with Last-Event-ID.
func (s *StreamChecker) Rehome() {
	for _, st := range s.streams {
		st.mu.Lock()
		if st.current != "" && st.current != st.home && st.dropConn != nil {
			st.dropConn()
		}
		st.mu.Unlock()
	}
}

// Stats returns the counters so far.
func (s *StreamChecker) Stats() StreamStats {
	out := StreamStats{
		Streams:     len(s.streams),
		Messages:    s.messages.Load(),
		Resyncs:     s.resyncs.Load(),
		Unavailable: s.unavailable.Load(),
		Violations:  s.violations.Load(),
		Connections: s.connections.Load(),
		Refused:     s.refused.Load(),
	}
	for _, st := range s.streams {
		st.mu.Lock()
		if st.connected {
			out.Connected++
			if st.current != st.home {
				out.Away++
			}
		}
		st.mu.Unlock()
	}
	s.mu.Lock()
	out.Examples = append([]string(nil), s.examples...)
	s.mu.Unlock()
	return out
}

// run keeps st connected, home first, then the other nodes in random
// order, pausing with a doubling backoff after every URL failed once or
// after a connection that ended quickly.
func (s *StreamChecker) run(ctx context.Context, st *stream) {
	backoff := s.cfg.Backoff
	for ctx.Err() == nil {
		served, lived := false, time.Duration(0)
		for _, base := range s.order(st.home) {
			began := time.Now()
			if served = s.connect(ctx, st, base); served || ctx.Err() != nil {
				lived = time.Since(began)
				break
			}
			s.refused.Add(1)
		}
		// A node that accepts streams and ends them at once gets the same
		// backoff as one that refuses them, or the stream would spin.
		if served && lived >= minHealthyStream {
			backoff = s.cfg.Backoff
			continue
		}
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, maxStreamBackoff)
	}
}

// order lists home, then the other URLs and the fallbacks shuffled.
func (s *StreamChecker) order(home string) []string {
	all := append(append([]string(nil), s.cfg.URLs...), s.cfg.Fallback...)
	out := []string{home}
	for _, i := range rand.Perm(len(all)) {
		if u := all[i]; u != home {
			out = append(out, u)
		}
	}
	return out
}

// connect runs one connection of st to base until it ends; it reports
// whether the node accepted the stream.
func (s *StreamChecker) connect(ctx context.Context, st *stream, base string) bool {
	connCtx, drop := context.WithCancel(ctx)
	defer drop()
	req, err := http.NewRequestWithContext(connCtx, http.MethodGet, base+s.query, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Accept", "text/event-stream")
	if s.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	}
	if st.last != "" {
		req.Header.Set("Last-Event-ID", st.last)
	}
	watchdog := time.AfterFunc(s.cfg.ConnectTimeout, drop)
	defer watchdog.Stop()
	x := Exchange{Node: base, Path: req.URL.Path, Start: time.Now()}
	resp, err := s.cfg.Client.Do(req)
	x.Latency = time.Since(x.Start)
	if err != nil {
		if ctx.Err() == nil {
			x.Err = err.Error()
			s.cfg.Exchanges.Add(x)
		}
		return false
	}
	defer resp.Body.Close()
	x.Status = resp.StatusCode
	s.cfg.Exchanges.Add(x)
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		s.cfg.Logger.Debug("chaos: stream refused", "stream", st.name, "node", base, "status", resp.StatusCode)
		return false
	}
	s.connections.Add(1)
	st.setConn(base, drop)
	defer st.setConn("", nil)
	watchdog.Reset(s.cfg.IdleTimeout)
	err = readEvents(resp.Body, func() { watchdog.Reset(s.cfg.IdleTimeout) }, func(ev Event) { s.handle(st, ev) })
	if ctx.Err() == nil {
		s.cfg.Logger.Debug("chaos: stream dropped", "stream", st.name, "node", base, "err", err)
	}
	if connCtx.Err() == nil { // the node ended it, not Rehome, the idle watchdog or Close
		end := StreamEnd{Node: base, At: time.Now(), Err: "the stream ended"}
		if err != nil {
			end.Err = err.Error()
		}
		s.cfg.Exchanges.AddStreamEnd(end)
	}
	return true
}

func (st *stream) setConn(base string, drop context.CancelFunc) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.current, st.dropConn, st.connected = base, drop, base != ""
}

// handle checks one event against st's invariants.
func (s *StreamChecker) handle(st *stream, ev Event) {
	if ev.ID != "" {
		st.last = ev.ID
	}
	if ev.Type == "" {
		return // a frame of the id alone: a position, no event
	}
	switch ev.Type {
	case "message":
		s.messages.Add(1)
		if err := st.seq.Message(ev.Channel, ev.MessageID); err != nil {
			s.violation("%s: %v", st.name, err)
		}
	case "resync":
		s.resyncs.Add(1)
		st.seq.Resync(ev.Channel)
	case "unavailable":
		s.unavailable.Add(1)
		s.violation("%s: %s unavailable", st.name, ev.Channel)
	}
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(st.name, ev)
	}
}

func (s *StreamChecker) violation(format string, args ...any) {
	s.violations.Add(1)
	msg := fmt.Sprintf(format, args...)
	s.cfg.Logger.Warn("chaos: stream violation", "detail", msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.examples) < maxExamples {
		s.examples = append(s.examples, msg)
	}
}
