package testkit

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// Endpoint is an HTTP server that answers every request with the status,
// headers and body the test set last: an identity provider's JWK Set, an
// application's configuration callback. It counts requests and can hold
// them, so a test sees what a client does with a slow or changing server.
type Endpoint struct {
	*httptest.Server

	requests atomic.Int64

	mu      sync.Mutex
	status  int
	header  http.Header
	body    []byte
	hold    chan struct{}       // while set, requests wait for it to close
	inspect func(*http.Request) // sees every request before its answer
}

// NewEndpoint starts an Endpoint answering status and body; it is closed
// when the test ends.
func NewEndpoint(t testing.TB, status int, body []byte) *Endpoint {
	e := &Endpoint{status: status, body: body}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.Close)
	return e
}

func (e *Endpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.requests.Add(1)
	e.mu.Lock()
	status, header, body, hold, inspect := e.status, e.header, e.body, e.hold, e.inspect
	e.mu.Unlock()
	if inspect != nil {
		inspect(r)
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return // the client gave up: nobody reads an answer
		}
	}
	maps.Copy(w.Header(), header)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Answer sets what the following requests get; header may be nil.
func (e *Endpoint) Answer(status int, header http.Header, body []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status, e.header, e.body = status, header, body
}

// Requests returns how many requests arrived, held ones included.
func (e *Endpoint) Requests() int64 { return e.requests.Load() }

// Hold makes the requests from now on wait until release is called (or
// their client gives up). release answers the waiting ones, stops holding
// new ones, and may be called more than once.
func (e *Endpoint) Hold() (release func()) {
	hold := make(chan struct{})
	e.mu.Lock()
	e.hold = hold
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			if e.hold == hold {
				e.hold = nil
			}
			e.mu.Unlock()
			close(hold)
		})
	}
}

// Inspect calls f with every following request before it is answered (its
// body unread), for a test that checks what the client sends. f runs on
// the server's goroutines.
func (e *Endpoint) Inspect(f func(*http.Request)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inspect = f
}
