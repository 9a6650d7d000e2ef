package api

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// streamServer serves a handler over real HTTP for SSE tests.
type streamServer struct {
	t   *testing.T
	srv *httptest.Server
}

func newStreamServer(t *testing.T, e *env) *streamServer {
	t.Helper()
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	return &streamServer{t: t, srv: srv}
}

// stream is an open SSE response read frame by frame.
type stream struct {
	t      *testing.T
	resp   *http.Response
	cancel context.CancelFunc
	frames chan string
}

// open starts a subscribe request and checks that it streams.
func (s *streamServer) open(target string, headers map[string]string) *stream {
	s.t.Helper()
	resp, cancel := s.request(target, headers)
	if resp.StatusCode != http.StatusOK {
		cancel()
		s.t.Fatalf("subscribe status %d", resp.StatusCode)
	}
	st := &stream{t: s.t, resp: resp, cancel: cancel, frames: make(chan string, 64)}
	go st.read()
	s.t.Cleanup(st.close)
	return st
}

// request sends a GET and returns the response with its cancel function.
func (s *streamServer) request(target string, headers map[string]string) (*http.Response, context.CancelFunc) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.srv.URL+target, nil)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	return resp, cancel
}

// read splits the body into frames (blocks ending with a blank line).
func (st *stream) read() {
	defer close(st.frames)
	r := bufio.NewReader(st.resp.Body)
	var frame strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		frame.WriteString(line)
		if line == "\n" {
			st.frames <- frame.String()
			frame.Reset()
		}
	}
}

// next returns the next frame, failing after a generous deadline.
func (st *stream) next() string {
	st.t.Helper()
	select {
	case f, ok := <-st.frames:
		if !ok {
			st.t.Fatal("stream ended")
		}
		return f
	case <-time.After(5 * time.Second):
		st.t.Fatal("no frame within 5s")
	}
	return ""
}

// ended reports whether the server closed the stream.
func (st *stream) ended() bool {
	select {
	case _, ok := <-st.frames:
		return !ok
	case <-time.After(5 * time.Second):
		return false
	}
}

func (st *stream) close() {
	st.cancel()
	_ = st.resp.Body.Close()
}
