package lazyctx

import (
	"context"
	"errors"
	"testing"
	"time"
)

type key struct{}

func TestNotArmedUntilWaitedFor(t *testing.T) {
	parent := context.WithValue(context.Background(), key{}, "v")
	c := WithTimeout(parent, time.Hour)
	defer c.Cancel()
	if c.Err() != nil || c.Value(key{}) != "v" {
		t.Fatalf("err %v value %v", c.Err(), c.Value(key{}))
	}
	if d, ok := c.Deadline(); !ok || time.Until(d) < 59*time.Minute {
		t.Fatalf("deadline %v %v", d, ok)
	}
	if c.loaded() != nil {
		t.Fatal("armed without anything waiting")
	}
	select {
	case <-c.Done():
		t.Fatal("done before its deadline")
	default:
	}
	if c.loaded() == nil {
		t.Fatal("Done did not arm the timer")
	}
	if c.Value(key{}) != "v" {
		t.Fatal("value lost once armed")
	}
}

func TestEndsAtItsDeadline(t *testing.T) {
	c := WithTimeout(context.Background(), time.Millisecond)
	defer c.Cancel()
	<-c.Done()
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("err %v", c.Err())
	}
}

func TestErrAfterTheDeadlineWithoutWaiting(t *testing.T) {
	c := WithTimeout(context.Background(), -time.Second)
	defer c.Cancel()
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("err %v", c.Err())
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Err said ended, Done is open")
	}
}

func TestEndsWithItsParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := WithTimeout(parent, time.Hour)
	defer c.Cancel()
	cancel()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("err before waiting %v", c.Err())
	}
	<-c.Done()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("err %v", c.Err())
	}
}

func TestParentDeadlineFirst(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := WithTimeout(parent, time.Hour)
	defer c.Cancel()
	pd, _ := parent.Deadline()
	if d, _ := c.Deadline(); !d.Equal(pd) {
		t.Fatalf("deadline %v, parent's %v", d, pd)
	}
}

func TestCancel(t *testing.T) {
	c := WithTimeout(context.Background(), time.Hour)
	c.Cancel()
	c.Cancel()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("err %v", c.Err())
	}
	<-c.Done()

	armed := WithTimeout(context.Background(), time.Hour)
	done := armed.Done()
	armed.Cancel()
	<-done
	if !errors.Is(armed.Err(), context.Canceled) {
		t.Fatalf("err %v", armed.Err())
	}
	var none *Ctx
	none.Cancel()
}

// A context derived from a Ctx ends with it.
func TestDerived(t *testing.T) {
	c := WithTimeout(context.Background(), time.Hour)
	child, cancel := context.WithCancel(c)
	defer cancel()
	c.Cancel()
	<-child.Done()
	if !errors.Is(child.Err(), context.Canceled) {
		t.Fatalf("child err %v", child.Err())
	}
}

func TestNoTimerWhenNotWaitedFor(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	allocs := testing.AllocsPerRun(100, func() {
		c := WithTimeout(parent, time.Second)
		_ = c.Err()
		c.Cancel()
	})
	if allocs > 1 {
		t.Fatalf("%v allocations, want at most 1", allocs)
	}
}
