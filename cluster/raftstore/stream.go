package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is the Raft transport's TCP stream layer. Unlike raft's own
// TCPStreamLayer, closing it also aborts the dials in progress: a leader
// heartbeats its followers with fresh dials once their connections broke,
// and a dial to a peer that vanished without refusing connections (a
// stopped container's address, a host gone off the network) only ends at
// its timeout. Raft's shutdown waits for those heartbeats, so without this
// a node stopping after its peers could hold its exit for the whole dial
// timeout, past the 10 s a graceful stop may take.
type streamLayer struct {
	net.Listener
	advertise net.Addr // nil: the bound address
	ctx       context.Context
	cancel    context.CancelFunc
}

// listenStreamLayer binds bindAddr; advertise, if not nil, is the address
// the other servers dial.
func listenStreamLayer(bindAddr string, advertise net.Addr) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, err
	}
	s := &streamLayer{Listener: ln, advertise: advertise}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	addr, ok := s.Addr().(*net.TCPAddr)
	switch {
	case !ok:
		err = errors.New("the raft address is not a TCP address")
	case addr.IP == nil || addr.IP.IsUnspecified():
		err = fmt.Errorf("the raft address %s cannot be dialled by others: set an advertise address", addr)
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(s.ctx, "tcp", string(address))
}

// Addr implements net.Listener: the advertised address if any.
func (s *streamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Close stops accepting and aborts the dials in progress.
func (s *streamLayer) Close() error {
	s.cancel()
	return s.Listener.Close()
}
