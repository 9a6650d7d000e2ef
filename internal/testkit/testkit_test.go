package testkit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Poll(time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestPollReturnsTheLastErrorAfterTheTimeout(t *testing.T) {
	sentinel := errors.New("never")
	err := Poll(10*time.Millisecond, func() error { return sentinel })
	if !errors.Is(err, sentinel) {
		t.Fatalf("Poll = %v, want it to wrap %v", err, sentinel)
	}
}

func TestPortsNeverRepeat(t *testing.T) {
	var p Ports
	seen := map[int]bool{}
	for range 20 {
		port, err := p.Take(true)
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] || port < 20000 || port >= 32000 {
			t.Fatalf("port %d repeated or outside 20000-31999", port)
		}
		seen[port] = true
	}
}

func TestCapturedLoggerKeepsRecords(t *testing.T) {
	log, buf := CapturedLogger()
	log.Debug("hello", "k", 1)
	if !strings.Contains(buf.String(), "msg=hello k=1") {
		t.Fatalf("buffer = %q", buf.String())
	}
}

func TestChangesRecordsInOrder(t *testing.T) {
	var c Changes
	c.Record("a", []byte("1"))
	c.Record("b", []byte{})
	c.Record("a", nil)
	want := []Change{{"a", []byte("1")}, {"b", []byte{}}, {"a", nil}}
	if got := c.Calls(); !EqualChanges(got, want) {
		t.Fatalf("Calls() = %q, want %q", got, want)
	}
	if EqualChanges(c.Calls(), []Change{{"a", []byte("1")}, {"b", nil}, {"a", nil}}) {
		t.Fatal("EqualChanges took an empty value for a deletion")
	}
	latest := c.Latest()
	if v, ok := latest["a"]; !ok || v != nil || string(latest["b"]) != "" || latest["b"] == nil {
		t.Fatalf("Latest() = %q, want a deleted and b empty", latest)
	}
	c.Reset()
	if got := c.Calls(); len(got) != 0 {
		t.Fatalf("Calls() after Reset = %q", got)
	}
}

func TestPollCountsACallThatBeganBeforeTheDeadline(t *testing.T) {
	// The only call begins before the deadline and ends after it.
	err := Poll(time.Millisecond, func() error {
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatalf("Poll = %v, want nil: the call began in time", err)
	}
}

func TestPollMakesNoCallAfterTheDeadline(t *testing.T) {
	calls := 0
	err := Poll(time.Millisecond, func() error {
		calls++
		if calls == 1 {
			time.Sleep(5 * time.Millisecond) // ends past the deadline
			return errors.New("not yet")
		}
		return nil
	})
	if err == nil || calls != 1 {
		t.Fatalf("Poll = %v after %d calls, want the first call's error and no second call", err, calls)
	}
}

func TestPollUntilRefusesAPassedDeadline(t *testing.T) {
	err := PollUntil(time.Now().Add(-time.Second), func() error { return nil })
	if !errors.Is(err, ErrLate) {
		t.Fatalf("PollUntil with a passed deadline = %v, want ErrLate", err)
	}
}

func TestMustTakeHandsOutDistinctPorts(t *testing.T) {
	var p Ports
	a, b := p.MustTake(t, false), p.MustTake(t, true)
	if a == b || !PortFree(a, false) || !PortFree(b, true) {
		t.Fatalf("ports %d and %d: want two distinct free ports", a, b)
	}
}

func TestFileName(t *testing.T) {
	t.Run("a b/c:d.e", func(t *testing.T) {
		if got, want := FileName(t), "TestFileName_a_b_c_d.e"; got != want {
			t.Fatalf("FileName = %q, want %q", got, want)
		}
	})
}

// recorder is a testing.TB that records what FailureLogger does with it.
type recorder struct {
	testing.TB
	failed   bool
	logged   []string
	cleanups []func()
}

func (r *recorder) Helper()          {}
func (r *recorder) Failed() bool     { return r.failed }
func (r *recorder) Log(args ...any)  { r.logged = append(r.logged, fmt.Sprint(args...)) }
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) runCleanups() {
	slices.Reverse(r.cleanups)
	for _, f := range r.cleanups {
		f()
	}
}

func TestFailureLoggerPrintsOnlyForAFailedTest(t *testing.T) {
	for _, failed := range []bool{false, true} {
		r := &recorder{TB: t}
		FailureLogger(r).Debug("story", "k", 1)
		r.failed = failed
		r.runCleanups()
		printed := len(r.logged) == 1 && strings.Contains(r.logged[0], "msg=story k=1")
		if printed != failed {
			t.Errorf("failed=%v: logged %q", failed, r.logged)
		}
	}
}

func TestLoggerDropsRecordsAfterTheTest(t *testing.T) {
	r := &recorder{TB: t}
	log := LoggerAt(r, slog.LevelWarn)
	log.Info("below the level")
	log.Warn("kept")
	r.runCleanups()
	log.Warn("after the end")
	if len(r.logged) != 1 || !strings.Contains(r.logged[0], "msg=kept") {
		t.Fatalf("logged %q, want only the warning before the end", r.logged)
	}
}

func TestEndpointAnswersWhatTheTestSetLast(t *testing.T) {
	e := NewEndpoint(t, http.StatusOK, []byte(`{"a": 1}`))
	get := func() (int, string, string) {
		t.Helper()
		resp, err := http.Get(e.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), string(body)
	}
	if status, _, body := get(); status != http.StatusOK || body != `{"a": 1}` {
		t.Fatalf("first answer %d %q", status, body)
	}
	e.Answer(http.StatusFound, http.Header{"Location": {"/elsewhere"}}, nil)
	var methods []string
	var mu sync.Mutex
	e.Inspect(func(r *http.Request) {
		mu.Lock()
		methods = append(methods, r.Method)
		mu.Unlock()
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Post(e.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/elsewhere" {
		t.Errorf("second answer %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	mu.Lock()
	defer mu.Unlock()
	if e.Requests() != 2 || !slices.Equal(methods, []string{"POST"}) {
		t.Errorf("%d requests, inspected %v; want 2 and the POST", e.Requests(), methods)
	}
}

func TestEndpointHoldsRequestsUntilReleased(t *testing.T) {
	e := NewEndpoint(t, http.StatusNoContent, nil)
	release := e.Hold()
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get(e.URL)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	WaitFor(t, "the request to arrive", func() bool { return e.Requests() == 1 })
	select {
	case status := <-done:
		t.Fatalf("a held request was answered %d", status)
	default:
	}
	release()
	release() // a second call changes nothing
	if status := <-done; status != http.StatusNoContent {
		t.Fatalf("released request: %d", status)
	}
	resp, err := http.Get(e.URL) // no longer held
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
