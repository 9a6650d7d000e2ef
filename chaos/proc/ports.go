//go:build unix

package proc

import (
	"fmt"
	"net"
)

// freePorts returns n distinct loopback ports free for TCP and UDP (gossip
// uses both). Every port is held until all are chosen, so none repeats;
// another process may still take one before the node binds it, which the
// node's start then reports.
func freePorts(n int) ([]int, error) {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("proc: free port: %w", err)
		}
		closers = append(closers, l.Close)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // UDP side taken: draw another
		}
		closers = append(closers, u.Close)
		ports = append(ports, port)
	}
	return ports, nil
}
