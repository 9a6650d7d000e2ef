package testkit

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// Ports hands out loopback ports for the listeners of one test's nodes.
// Ports are drawn below Linux's ephemeral range (32768-60999): a port from
// ":0" is ephemeral, and an outgoing connection could take it between the
// check and the node's bind. A node binds its port only when it starts,
// after every port was drawn, so Ports remembers what it handed out: two
// listeners are never given the same port. The zero value is ready to use.
type Ports struct {
	mu    sync.Mutex
	taken map[int]bool
}

// ErrNoFreePort is returned when no free port was found in 100 draws.
var ErrNoFreePort = errors.New("testkit: no free loopback port")

// Take returns a port of 127.0.0.1 not handed out before that is free for
// TCP and, when udp is true, for UDP too (memberlist binds both).
func (p *Ports) Take(udp bool) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.taken == nil {
		p.taken = make(map[int]bool)
	}
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if p.taken[port] || !PortFree(port, udp) {
			continue
		}
		p.taken[port] = true
		return port, nil
	}
	return 0, ErrNoFreePort
}

// MustTake is Take for a test's own goroutine: it fails t instead of
// returning an error.
func (p *Ports) MustTake(t testing.TB, udp bool) int {
	t.Helper()
	port, err := p.Take(udp)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Addr returns "127.0.0.1:<port>" for a port from Take.
func (p *Ports) Addr(udp bool) (string, error) {
	port, err := p.Take(udp)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}

// PortFree reports whether port of 127.0.0.1 can be bound for TCP (and UDP).
func PortFree(port int, udp bool) bool {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	if !udp {
		return true
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}
