package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Defaults of PoolConfig: a browser client's (presence-client.js's
// requestTimeoutMs). An attempt must outlast the hold of a node, which
// waits up to 10 s for a channel's new owner after a first failure.
const (
	DefaultRequestTimeout = 20 * time.Second
	DefaultBudget         = 60 * time.Second
	DefaultBackoff        = 100 * time.Millisecond
	maxBackoff            = time.Second
	maxResponseBytes      = 4 << 20
)

// ErrExhausted means every attempt of a call failed within its budget.
var ErrExhausted = errors.New("chaos: no node answered")

// ErrNoURLs is returned by NewPool without URLs.
var ErrNoURLs = errors.New("chaos: no node URLs")

// PoolConfig configures a Pool.
type PoolConfig struct {
	URLs           []string      // node base URLs, e.g. http://127.0.0.1:8080; required
	RequestTimeout time.Duration // one attempt; 0 = DefaultRequestTimeout
	Budget         time.Duration // every attempt of one call; 0 = DefaultBudget
	Backoff        time.Duration // pause after every URL failed once, doubling; 0 = DefaultBackoff
	Client         *http.Client  // nil = a client with a pooled transport
	// Exchanges, if set, records every attempt.
	Exchanges *Exchanges
}

// Pool sends requests to random node URLs and fails over to another URL on
// a connection error, a timeout or a 5xx answer, as a browser client does.
// It is safe for concurrent use.
type Pool struct {
	cfg    PoolConfig
	client *http.Client

	attempts     atomic.Int64
	failovers    atomic.Int64
	serverErrors atomic.Int64
	rateLimited  atomic.Int64
}

// PoolStats counts what a Pool did.
type PoolStats struct {
	Attempts     int64 // HTTP requests sent
	Failovers    int64 // attempts that failed and moved on to another URL
	ServerErrors int64 // 5xx answers other than 503 (a node bug, not an outage)
	RateLimited  int64 // 429 answers
}

// Request is one call to the API.
type Request struct {
	Method      string
	Path        string // with the query, e.g. /presence/get?channels[]=/a
	Body        []byte
	ContentType string
	Token       string // bearer token; "" = anonymous
	Header      http.Header
}

// Response is the answer of the node that answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	URL    string // base URL of the node that answered
	// Late: an earlier attempt may have reached a node (it timed out or
	// got a 5xx), which may still apply it.
	Late bool
}

// NewPool returns a Pool over cfg.URLs.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if len(cfg.URLs) == 0 {
		return nil, ErrNoURLs
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Budget == 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = DefaultBackoff
	}
	client := cfg.Client
	if client == nil {
		client = NewHTTPClient()
	}
	return &Pool{cfg: cfg, client: client}, nil
}

// NewHTTPClient returns a client whose transport keeps enough idle
// connections per node for a thousand simulated clients, so the workload
// does not open a TCP connection per request.
func NewHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 2048
	tr.MaxIdleConnsPerHost = 512
	tr.IdleConnTimeout = 30 * time.Second
	return &http.Client{Transport: tr}
}

// URLs returns the node URLs of the pool.
func (p *Pool) URLs() []string { return append([]string(nil), p.cfg.URLs...) }

// Stats returns the counters so far.
func (p *Pool) Stats() PoolStats {
	return PoolStats{
		Attempts:     p.attempts.Load(),
		Failovers:    p.failovers.Load(),
		ServerErrors: p.serverErrors.Load(),
		RateLimited:  p.rateLimited.Load(),
	}
}

// Do sends req to the URLs in a random order until one answers with
// neither a 5xx nor a 429, pausing after each full round and after a 429
// (its Retry-After, within the budget). Any other answer, 4xx included, is
// returned as is; after the budget the error wraps ErrExhausted.
func (p *Pool) Do(ctx context.Context, req Request) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Budget)
	defer cancel()
	backoff := p.cfg.Backoff
	var lastErr error
	late := false
	for {
		for _, i := range rand.Perm(len(p.cfg.URLs)) {
			resp, err := p.once(ctx, p.cfg.URLs[i], req)
			resp.Late = late
			late = late || (err != nil && delivered(err)) || (err == nil && resp.Status >= 500)
			switch {
			case err == nil && resp.Status == http.StatusTooManyRequests:
				p.rateLimited.Add(1)
				lastErr = fmt.Errorf("%s: 429", resp.URL)
				if !sleep(ctx, retryAfter(resp.Header)) {
					return Response{}, fmt.Errorf("%w: %v (%v)", ErrExhausted, lastErr, context.Cause(ctx))
				}
				continue
			case err == nil && resp.Status < 500:
				return resp, nil
			case err == nil:
				if resp.Status != http.StatusServiceUnavailable {
					p.serverErrors.Add(1)
				}
				lastErr = fmt.Errorf("%s: %d %s", resp.URL, resp.Status, bytes.TrimSpace(resp.Body))
			default:
				lastErr = err
			}
			if ctx.Err() != nil {
				return Response{}, fmt.Errorf("%w: %v", ErrExhausted, lastErr)
			}
			p.failovers.Add(1)
		}
		if !sleep(ctx, backoff) {
			return Response{}, fmt.Errorf("%w: %v", ErrExhausted, lastErr)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// once sends one attempt to base.
func (p *Pool) once(ctx context.Context, base string, req Request) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, base+req.Path, body)
	if err != nil {
		return Response{}, err
	}
	for k, v := range req.Header {
		hr.Header[k] = v
	}
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	if req.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.Token)
	}
	p.attempts.Add(1)
	began := time.Now()
	x := Exchange{Node: base, Path: hr.URL.Path, Start: began}
	defer func() {
		x.Latency = time.Since(began)
		p.cfg.Exchanges.Add(x)
	}()
	resp, err := p.client.Do(hr)
	if err != nil {
		x.Err = err.Error()
		return Response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		x.Err = err.Error()
		return Response{}, fmt.Errorf("%s: reading the answer: %w", base, err)
	}
	x.Status = resp.StatusCode
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data, URL: base}, nil
}

// delivered reports whether a failed attempt may have reached the node:
// only a failed dial proves it did not.
func delivered(err error) bool {
	var op *net.OpError
	return !errors.As(err, &op) || op.Op != "dial"
}

// retryAfter reads a Retry-After in seconds; a missing or odd value means 1 s.
func retryAfter(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get("Retry-After")); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return time.Second
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
