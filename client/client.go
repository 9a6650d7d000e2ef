// Package client is the Go client of a presence cluster for an
// application's backend: the server-side API (/server/: present and leave
// on behalf of a user, read the whole state of channels, ask what a user
// may do, clear a channel) and the admin API of prefix documents, as typed
// methods. It is what Discourse's server code does with PresenceChannel
// from Ruby, over HTTP, against any node of the cluster.
//
// A Client spreads its calls over the nodes it is given and retries a call
// on the next node when a node cannot be reached or answers 503 (or 502,
// 504, 429) — every call of these APIs can be repeated without harm, a
// presence update being a heartbeat — honouring Retry-After and the
// caller's context (a call whose context ends returns an error matching
// the context's). Errors carry the status and the node's messages, and
// match the sentinels of this package with errors.Is.
//
// It depends on the standard library only.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	// DefaultRetries is how many times a call is tried again, each time on
	// the next node.
	DefaultRetries = 3
	// DefaultRetryBackoff is the first pause before a retry; it doubles
	// with each attempt (a Retry-After answer sets it instead).
	DefaultRetryBackoff = 100 * time.Millisecond
	// DefaultMaxRetryWait bounds one pause, Retry-After included.
	DefaultMaxRetryWait = 5 * time.Second
	// DefaultTimeout bounds one HTTP attempt of the default HTTP client.
	// A node may hold a call up to 10 s while a channel changes owner,
	// so it is longer than that.
	DefaultTimeout = 15 * time.Second
	// MaxChannelsPerGet is the most channels one GET /server/presence/get
	// asks for; Get asks more in several calls.
	MaxChannelsPerGet = 500
	// maxErrorBody bounds what is read of an error answer.
	maxErrorBody = 64 << 10
	// maxBody bounds what is read of any answer.
	maxBody = 32 << 20
)

// Config configures a Client. URLs and Token are required; every other
// zero value takes the documented default.
type Config struct {
	// URLs are the base URLs of the cluster's nodes ("https://presence-1:8080").
	// Calls start at each node in turn and fail over to the next.
	URLs []string
	// Token opens the server-side API: one of the nodes' service tokens
	// (--service-tokens) or the admin token.
	Token string
	// AdminToken opens the admin API (prefix documents, the cluster's
	// view); "" means Token, which must then be the admin token.
	AdminToken string
	// HTTPClient makes the requests; nil means a client with
	// DefaultTimeout.
	HTTPClient *http.Client
	// Retries is how many times a call is tried again on the next node
	// after a connection error or a 502, 503, 504 or 429; 0 means
	// DefaultRetries, negative means never.
	Retries int
	// RetryBackoff is the first pause between attempts, doubling; 0 means
	// DefaultRetryBackoff.
	RetryBackoff time.Duration
	// MaxRetryWait bounds each pause, a node's Retry-After included; 0
	// means DefaultMaxRetryWait.
	MaxRetryWait time.Duration
}

// Client calls a presence cluster. It is safe for concurrent use.
type Client struct {
	bases      []*url.URL
	token      string
	adminToken string
	http       *http.Client
	retries    int
	backoff    time.Duration
	maxWait    time.Duration
	next       atomic.Uint32 // the node the next call starts at
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("client: at least one node URL is required")
	}
	if cfg.Token == "" {
		return nil, errors.New("client: a token is required")
	}
	if cfg.RetryBackoff < 0 || cfg.MaxRetryWait < 0 {
		return nil, errors.New("client: negative retry pause")
	}
	c := &Client{token: cfg.Token, adminToken: cfg.AdminToken, http: cfg.HTTPClient,
		retries: cfg.Retries, backoff: cfg.RetryBackoff, maxWait: cfg.MaxRetryWait}
	for _, raw := range cfg.URLs {
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("client: %q is not an http or https base URL", raw)
		}
		c.bases = append(c.bases, u)
	}
	if c.adminToken == "" {
		c.adminToken = c.token
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: DefaultTimeout}
	}
	switch {
	case c.retries == 0:
		c.retries = DefaultRetries
	case c.retries < 0:
		c.retries = 0
	}
	if c.backoff == 0 {
		c.backoff = DefaultRetryBackoff
	}
	if c.maxWait == 0 {
		c.maxWait = DefaultMaxRetryWait
	}
	return c, nil
}

// Sentinel errors: every *Error matches the one of its status with
// errors.Is.
var (
	ErrBadRequest   = errors.New("presence: bad request")             // 400
	ErrUnauthorized = errors.New("presence: not authenticated")       // 401: a wrong or missing token
	ErrForbidden    = errors.New("presence: forbidden")               // 403
	ErrNotFound     = errors.New("presence: not found")               // 404, or a channel that does not exist (State)
	ErrTooLarge     = errors.New("presence: request too large")       // 413
	ErrRateLimited  = errors.New("presence: rate limited")            // 429
	ErrUnavailable  = errors.New("presence: temporarily unavailable") // 502, 503, 504, or no node reachable
	ErrServer       = errors.New("presence: server error")            // another status
)

// Error is an answer of a node that is not a success.
type Error struct {
	Method, URL string
	Status      int
	// Messages are the node's {"errors": [...]}, or the start of the body
	// when it was not one.
	Messages []string
	// RetryAfter is the node's Retry-After, 0 without one.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	msg := http.StatusText(e.Status)
	if len(e.Messages) > 0 {
		msg = strings.Join(e.Messages, "; ")
	}
	return fmt.Sprintf("presence: %s %s: %d %s", e.Method, e.URL, e.Status, msg)
}

// Unwrap returns the sentinel of e's status.
func (e *Error) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest:
		return ErrBadRequest
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusRequestEntityTooLarge:
		return ErrTooLarge
	case http.StatusTooManyRequests:
		return ErrRateLimited
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return ErrUnavailable
	}
	return ErrServer
}

// retryable reports whether a status is worth another node.
func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// call is one API call: its request, and where its 2xx answer goes.
type call struct {
	method, path string
	query        url.Values
	body         any     // encoded as JSON; nil: no body
	admin        bool    // the admin token instead of the service token
	out          any     // decoded from a 2xx answer's JSON; nil: ignored
	raw          *[]byte // the 2xx answer's bytes, when set
}

// do runs c on the nodes: from the next node in turn, on to the following
// one after a connection error or a retryable status, pausing between
// attempts, until an answer is final, the retries are spent or ctx ends.
func (cl *Client) do(ctx context.Context, c call) error {
	var body []byte
	if c.body != nil {
		var err error
		if body, err = json.Marshal(c.body); err != nil {
			return fmt.Errorf("client: encoding the request: %w", err)
		}
	}
	start := int(cl.next.Add(1)-1) % len(cl.bases)
	pause := cl.backoff
	var last error
	for attempt := 0; ; attempt++ {
		base := cl.bases[(start+attempt)%len(cl.bases)]
		wait, err := cl.attempt(ctx, base, c, body)
		if err == nil {
			return nil
		}
		last = err
		if wait < 0 || attempt >= cl.retries {
			return last
		}
		if wait == 0 {
			wait = pause
			pause *= 2
		}
		if ctx.Err() != nil || !sleep(ctx, min(wait, cl.maxWait)) {
			return fmt.Errorf("client: %w; the last attempt: %w", ctx.Err(), last)
		}
	}
}

// attempt makes one request to base. It returns nil on success, else the
// error and how long to wait before the next attempt: 0 for the default
// pause, negative when the error is final.
func (cl *Client) attempt(ctx context.Context, base *url.URL, c call, body []byte) (time.Duration, error) {
	target := base.JoinPath(c.path)
	target.RawQuery = c.query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, target.String(), rd)
	if err != nil {
		return -1, fmt.Errorf("client: %w", err)
	}
	token := cl.token
	if c.admin {
		token = cl.adminToken
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return 0, fmt.Errorf("%w: %s %s: %w", ErrUnavailable, c.method, target.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := readError(resp, c.method, target.Redacted())
		if !retryable(resp.StatusCode) {
			return -1, e
		}
		return e.RetryAfter, e
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, fmt.Errorf("%w: %s %s: reading the answer: %w", ErrUnavailable, c.method, target.Redacted(), err)
	}
	if c.raw != nil {
		*c.raw = data
	}
	if c.out != nil {
		if err := json.Unmarshal(data, c.out); err != nil {
			return -1, fmt.Errorf("%w: %s %s: undecodable answer: %w", ErrServer, c.method, target.Redacted(), err)
		}
	}
	return 0, nil
}

// readError turns a failed answer into an *Error.
func readError(resp *http.Response, method, target string) *Error {
	e := &Error{Method: method, URL: target, Status: resp.StatusCode}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body struct {
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(data, &body) == nil && len(body.Errors) > 0 {
		e.Messages = body.Errors
	} else if text := strings.TrimSpace(string(data)); text != "" {
		e.Messages = []string{text[:min(len(text), 200)]}
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// sleep waits d or until ctx ends; false when ctx ended.
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
