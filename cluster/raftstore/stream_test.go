//go:build linux

package raftstore

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// blackhole returns the address of a listener that never accepts and whose
// accept queue is full, so that a dial to it hangs (the kernel drops the
// SYNs) as a dial to a vanished host does. It skips the test where the
// kernel refuses instead.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Skipf("raw socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 16 { // fill the accept queue until a dial hangs
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		t.Skipf("this kernel refuses instead of dropping SYNs: %v", err)
	}
	t.Skip("the accept queue never filled")
	return ""
}

func TestStreamLayerCloseAbortsDials(t *testing.T) {
	addr := blackhole(t)
	s, err := newStreamLayer(listenTCP(t, ""), "127.0.0.1:8300")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Dial(raft.ServerAddress(addr), time.Hour)
		done <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("dial after Close: %v, want it cancelled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a dial to a vanished peer outlived Close")
	}
}

func TestStreamLayerNeedsADiallableAddress(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8300", "[::]:8300", ":8300", "node1"} {
		if _, err := newStreamLayer(tcpStreams{}, addr); err == nil {
			t.Errorf("%q was accepted as an address other servers dial", addr)
		}
	}
	for _, addr := range []string{"10.0.0.7:7947", "node1:7947"} {
		s, err := newStreamLayer(tcpStreams{}, addr)
		if err != nil {
			t.Fatal(err)
		}
		if s.Addr().String() != addr {
			t.Fatalf("Addr %v, want %s", s.Addr(), addr)
		}
	}
}
