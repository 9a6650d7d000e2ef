package testkit

import (
	"errors"
	"strings"
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
