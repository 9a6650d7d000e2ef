package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/presencehq/presence/bench/token"
)

// NewHTTPClient returns a client with a keep-alive pool of conns
// connections per host and a per-request timeout.
func NewHTTPClient(conns int, timeout time.Duration) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: t, Timeout: timeout}
}

// HTTPConfig sets up an HTTPTarget.
type HTTPConfig struct {
	// URLs are node base URLs; client i of the population talks to
	// URLs[i mod len(URLs)], as browsers spread over a cluster.
	URLs   []string
	Client *http.Client
	Pop    *Population
	// Minter mints per-user tokens (and stamped tokens for enters).
	Minter *token.Minter
	// Groups go into every token (for prefixes restricted to groups).
	Groups []string
	// Tracker, when set, is told about enters so deliveries can be timed.
	Tracker *Tracker
	// Route picks each call's node; RouteOwner and RouteOther need Owners.
	Route  Route
	Owners *Ownership
}

// HTTPTarget sends operations as POST /presence/update calls.
type HTTPTarget struct {
	cfg    HTTPConfig
	tokens []string
}

// NewHTTPTarget mints one token per user and returns the target.
func NewHTTPTarget(cfg HTTPConfig) (*HTTPTarget, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("load: no URLs")
	}
	if cfg.Route.NeedsOwners() && cfg.Owners == nil {
		return nil, fmt.Errorf("load: route %s needs the channels' owners", cfg.Route)
	}
	t := &HTTPTarget{cfg: cfg, tokens: make([]string, cfg.Pop.Config().Users)}
	for u := range t.tokens {
		tok, err := cfg.Minter.Mint(t.user(u, 0))
		if err != nil {
			return nil, err
		}
		t.tokens[u] = tok
	}
	return t, nil
}

func (t *HTTPTarget) user(u int, stamp uint64) token.User {
	id := t.cfg.Pop.UserID(u)
	usr := token.User{ID: id, Username: "load" + strconv.Itoa(u), Name: "Load User " + strconv.Itoa(u), Groups: t.cfg.Groups}
	if stamp != 0 {
		usr.AvatarTemplate = AvatarWithStamp(stamp)
	}
	return usr
}

// WithRoute returns a target sending the same population's calls by route
// r (owners may be nil when r does not need them); tokens are shared.
func (t *HTTPTarget) WithRoute(r Route, owners *Ownership) (*HTTPTarget, error) {
	if r.NeedsOwners() && owners == nil {
		return nil, fmt.Errorf("load: route %s needs the channels' owners", r)
	}
	c := *t
	c.cfg.Route, c.cfg.Owners = r, owners
	return &c, nil
}

// Batch implements Target: one operation per HTTP call.
func (t *HTTPTarget) Batch() int { return 1 }

type updateBody struct {
	ClientID string   `json:"client_id"`
	Present  []string `json:"present_channels,omitempty"`
	Leave    []string `json:"leave_channels,omitempty"`
}

// Do implements Target.
func (t *HTTPTarget) Do(ctx context.Context, ops []*Op, out []Outcome) {
	for i, op := range ops {
		out[i] = t.do(ctx, op)
	}
}

func (t *HTTPTarget) do(ctx context.Context, op *Op) Outcome {
	pop := t.cfg.Pop
	body := updateBody{ClientID: pop.ClientID(op.User, op.Client)}
	names := make([]string, len(op.Channels))
	for i, c := range op.Channels {
		names[i] = pop.ChannelName(c)
	}
	if op.Kind == Leave {
		body.Leave = names
	} else {
		body.Present = names
	}
	payload, _ := json.Marshal(body)
	tok := t.tokens[op.User]
	if op.AnyEntering() && t.cfg.Tracker != nil {
		// A stamped token lets the subscriber side tie the message to this call.
		op.Stamp = t.cfg.Tracker.NextStamp()
		if st, err := t.cfg.Minter.Mint(t.user(op.User, op.Stamp)); err == nil {
			tok = st
		}
	}
	base := t.cfg.URLs[t.cfg.Route.pick(op, pop.Config().ClientsPerUser, len(t.cfg.URLs), t.cfg.Owners)]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/presence/update", bytes.NewReader(payload))
	if err != nil {
		return Outcome{Code: "bad request: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	t.expect(op)
	resp, err := t.cfg.Client.Do(req)
	if err != nil {
		t.cancel(op)
		return Outcome{Code: errorClass(err)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	code := strconv.Itoa(resp.StatusCode)
	if err != nil {
		t.cancel(op)
		return Outcome{Code: errorClass(err)}
	}
	if resp.StatusCode != http.StatusOK {
		t.cancel(op)
		return Outcome{Code: code}
	}
	applyResponse(op, names, data)
	t.cancel(op)
	return Outcome{Code: code, OK: true}
}

// expect registers the op's enters with the tracker just before sending.
func (t *HTTPTarget) expect(op *Op) {
	if op.Stamp == 0 {
		return
	}
	now := time.Now()
	for i, c := range op.Channels {
		if op.Entering[i] {
			t.cfg.Tracker.Expect(c, op.User, op.Stamp, now)
		}
	}
}

// cancel forgets the op's enters that the server did not apply.
func (t *HTTPTarget) cancel(op *Op) {
	if op.Stamp == 0 {
		return
	}
	for i, c := range op.Channels {
		if op.Entering[i] && !op.Applied[i] {
			t.cfg.Tracker.Cancel(c, op.User, op.Stamp)
		}
	}
}

// applyResponse sets Applied from a 200 answer: a leave always applies; a
// present channel applies unless the answer maps it to false (a handler
// that answers something else, like the baseline, applies everything).
func applyResponse(op *Op, names []string, data []byte) {
	var answer map[string]any
	_ = json.Unmarshal(data, &answer)
	for i, name := range names {
		v, ok := answer[name]
		op.Applied[i] = op.Kind == Leave || !ok || v == true
	}
}

// errorClass names a transport error briefly, for the error table.
func errorClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local ports"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return "error: " + msg
}
