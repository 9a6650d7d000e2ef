package testcluster

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// portPicker hands out ports of 127.0.0.1 for the nodes of one cluster.
// Ports are drawn below Linux's ephemeral range (32768-60999): a port from
// ":0" is ephemeral, and an outgoing connection could take it between the
// check and the node's bind. A port is bound by its node only when the node
// starts, after every port was drawn, so the picker remembers what it
// handed out: two nodes must never be given the same port.
type portPicker struct {
	mu    sync.Mutex
	taken map[int]bool
}

func newPortPicker() *portPicker { return &portPicker{taken: make(map[int]bool)} }

// pick returns a port not handed out before for which free reports true.
func (p *portPicker) pick(t testing.TB, free func(port int) bool) int {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if p.taken[port] || !free(port) {
			continue
		}
		p.taken[port] = true
		return port
	}
	t.Fatalf("testcluster: no free port found")
	return 0
}
