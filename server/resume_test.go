package server

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/router/wire"
)

func TestFreezeWatchDetectsAGapAndQuietsAfterIt(t *testing.T) {
	w := freezeWatch{threshold: 2 * time.Second, quiet: 3 * time.Second}
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for _, s := range []float64{0, 0.25, 0.5, 2.4} { // ticks, one late by less than the threshold
		if _, ok := w.observe(at(s)); ok {
			t.Fatalf("a freeze detected at %vs", s)
		}
	}
	if resuming, _ := w.resuming(at(2.5)); resuming {
		t.Fatal("resuming without a freeze")
	}
	frozen, ok := w.observe(at(17.4)) // SIGSTOP for 15 s
	if !ok || frozen != 15*time.Second {
		t.Fatalf("freeze %v %v, want 15s", frozen, ok)
	}
	if resuming, f := w.resuming(at(17.5)); !resuming || f != 15*time.Second {
		t.Fatalf("right after the freeze: resuming %v (%v)", resuming, f)
	}
	if resuming, _ := w.resuming(at(20.4)); resuming {
		t.Fatal("still resuming after the quiet period")
	}
	// A tick within the quiet period keeps the freeze; the first one after
	// it forgets the freeze, so requests read no clock any more.
	w.observe(at(17.65))
	if w.freeze.Load() == nil {
		t.Fatal("the freeze forgotten within its quiet period")
	}
	w.observe(at(19.5))
	w.observe(at(20.5))
	if w.freeze.Load() != nil {
		t.Fatal("the freeze kept after its quiet period")
	}
	if resuming, _ := w.resumingNow(); resuming {
		t.Fatal("resuming after the freeze was forgotten")
	}
}

// The request path's check takes no lock and allocates nothing.
func TestFreezeWatchResumingNowIsCheap(t *testing.T) {
	w := freezeWatch{threshold: time.Second, quiet: time.Hour}
	w.observe(time.Now())
	if allocs := testing.AllocsPerRun(100, func() { w.resumingNow() }); allocs != 0 {
		t.Fatalf("%v allocations", allocs)
	}
	w.observe(time.Now().Add(10 * time.Second))
	if resuming, f := w.resumingNow(); !resuming || f < 9*time.Second {
		t.Fatalf("after a freeze: resuming %v (%v)", resuming, f)
	}
}

func TestGuardResumeRefusesPresenceRequestsOnly(t *testing.T) {
	s := &Server{freeze: freezeWatch{threshold: time.Second, quiet: time.Hour}}
	h := s.guardResume(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	serve := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	if rec := serve("/presence/get"); rec.Code != http.StatusNoContent {
		t.Fatalf("before a freeze: %d", rec.Code)
	}
	now := time.Now()
	s.freeze.observe(now.Add(-10 * time.Second))
	s.freeze.observe(now) // frozen 10 s
	for _, path := range []string{"/presence/update", "/presence/get", "/presence/subscribe", "/server/presence/get"} {
		rec := serve(path)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" ||
			!strings.Contains(rec.Body.String(), `"errors":["service temporarily unavailable: this node is resuming`) {
			t.Errorf("%s while resuming: %d %v %s", path, rec.Code, rec.Header(), rec.Body)
		}
	}
	for _, path := range []string{"/readyz", "/healthz", "/admin/cluster", "/metrics"} {
		if rec := serve(path); rec.Code != http.StatusNoContent {
			t.Errorf("%s while resuming: %d, want it served", path, rec.Code)
		}
	}
}

func TestForwardedRequestsAreRefusedWhileResuming(t *testing.T) {
	s := &Server{freeze: freezeWatch{threshold: time.Second, quiet: time.Hour}}
	for _, m := range []uint16{wire.MethodUpdate, wire.MethodGet, wire.MethodSince, wire.MethodInstall} {
		if err := s.refuseWhileResuming(m); err != nil {
			t.Fatalf("method %d before a freeze: %v", m, err)
		}
	}
	now := time.Now()
	s.freeze.observe(now.Add(-10 * time.Second))
	s.freeze.observe(now)
	for _, m := range []uint16{wire.MethodUpdate, wire.MethodGet, wire.MethodSince} {
		if err := s.refuseWhileResuming(m); !errors.Is(err, wire.ErrBusy) {
			t.Errorf("method %d while resuming: %v, want ErrBusy (the entry node holds it)", m, err)
		}
	}
	// Hand-offs and replication go on: they are how the node catches up.
	for _, m := range []uint16{wire.MethodInstall, wire.MethodExtract, wire.MethodReplicate, wire.MethodPush, wire.MethodInterest, wire.MethodLeaves} {
		if err := s.refuseWhileResuming(m); err != nil {
			t.Errorf("method %d while resuming: %v, want it served", m, err)
		}
	}
}
