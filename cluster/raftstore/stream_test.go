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
	s, err := listenStreamLayer("127.0.0.1:0", nil)
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

func TestListenStreamLayerNeedsADiallableAddress(t *testing.T) {
	if _, err := listenStreamLayer("0.0.0.0:0", nil); err == nil {
		t.Fatal("an unspecified bind address without an advertise address was accepted")
	}
	adv := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 8300}
	s, err := listenStreamLayer("0.0.0.0:0", adv)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Addr() != adv {
		t.Fatalf("Addr %v, want the advertised %v", s.Addr(), adv)
	}
}
