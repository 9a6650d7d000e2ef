package chaos

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// deadURL is a loopback URL where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func statusServer(t *testing.T, status int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"answer": true}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPoolFailsOverToTheNodeThatAnswers(t *testing.T) {
	good := statusServer(t, http.StatusOK)
	p, err := NewPool(PoolConfig{URLs: []string{deadURL(t), statusServer(t, http.StatusServiceUnavailable), good}})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		resp, err := p.Do(context.Background(), Request{Method: http.MethodGet, Path: "/x"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.URL != good || resp.Status != http.StatusOK || string(resp.Body) != `{"answer": true}` {
			t.Fatalf("answer from %s: %d %s", resp.URL, resp.Status, resp.Body)
		}
	}
	st := p.Stats()
	if st.Attempts < 10 || st.Failovers != st.Attempts-10 || st.ServerErrors != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestPoolReturnsClientErrorsAsIs(t *testing.T) {
	p, err := NewPool(PoolConfig{URLs: []string{statusServer(t, http.StatusForbidden)}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Do(context.Background(), Request{Method: http.MethodGet, Path: "/x"})
	if err != nil || resp.Status != http.StatusForbidden {
		t.Fatalf("got %d, %v; want 403", resp.Status, err)
	}
}

func TestPoolGivesUpAfterItsBudget(t *testing.T) {
	p, err := NewPool(PoolConfig{
		URLs:   []string{deadURL(t), statusServer(t, http.StatusInternalServerError)},
		Budget: 300 * time.Millisecond, Backoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Do(context.Background(), Request{Method: http.MethodGet, Path: "/x"})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err %v, want ErrExhausted", err)
	}
	if st := p.Stats(); st.ServerErrors == 0 || st.Attempts < 2 {
		t.Errorf("stats: %+v", st)
	}
}

func TestNewPoolNeedsURLs(t *testing.T) {
	if _, err := NewPool(PoolConfig{}); !errors.Is(err, ErrNoURLs) {
		t.Errorf("err %v, want ErrNoURLs", err)
	}
}

func TestPoolMarksAnswersAfterAmbiguousFailuresLate(t *testing.T) {
	good := statusServer(t, http.StatusOK)
	refused, err := NewPool(PoolConfig{URLs: []string{deadURL(t), good}})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if resp, err := refused.Do(context.Background(), Request{Method: http.MethodGet, Path: "/x"}); err != nil || resp.Late {
			t.Fatalf("after a refused connection: late %v, %v; want not late", resp.Late, err)
		}
	}
	// One node: 503 to the first call, 200 after.
	var calls atomic.Int32
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer flaky.Close()
	p, err := NewPool(PoolConfig{URLs: []string{flaky.URL}, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i, wantLate := range []bool{true, false} {
		resp, err := p.Do(context.Background(), Request{Method: http.MethodGet, Path: "/x"})
		if err != nil || resp.Status != http.StatusOK || resp.Late != wantLate {
			t.Errorf("call %d: %d, late %v, %v; want 200, late %v", i+1, resp.Status, resp.Late, err, wantLate)
		}
	}
}
