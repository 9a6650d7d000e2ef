package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Streams is where Raft's connections come from: Accept hands over those
// other servers opened, DialContext opens one to the server at an address,
// Close stops both. The node runs Raft over its authenticated node-to-node
// transport this way (transport.Streams), on the rpc port, instead of a
// port of its own.
type Streams interface {
	Accept() (net.Conn, error)
	DialContext(ctx context.Context, addr string) (net.Conn, error)
	Close() error
}

// streamLayer adapts Streams to raft.StreamLayer. Closing it also aborts
// the dials in progress: a leader heartbeats its followers with fresh
// dials once their connections broke, and a dial to a peer that vanished
// without refusing connections (a stopped container's address, a host
// gone off the network) only ends at its timeout. Raft's shutdown waits
// for those heartbeats, so without this a node stopping after its peers
// could hold its exit for the whole dial timeout, past the 10 s a
// graceful stop may take.
type streamLayer struct {
	streams Streams
	addr    net.Addr // the address other servers dial
	ctx     context.Context
	cancel  context.CancelFunc
}

// serverAddr is an address as the other servers dial it: a host name
// stays a name, resolved at each dial.
type serverAddr string

func (a serverAddr) Network() string { return "tcp" }
func (a serverAddr) String() string  { return string(a) }

// newStreamLayer runs Raft over streams; addr is this server's address as
// the others dial it, which must name a host (not 0.0.0.0).
func newStreamLayer(streams Streams, addr string) (*streamLayer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return nil, fmt.Errorf("the raft address %s cannot be dialled by others: set an advertise address", addr)
	}
	s := &streamLayer{streams: streams, addr: serverAddr(addr)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Accept implements net.Listener.
func (s *streamLayer) Accept() (net.Conn, error) { return s.streams.Accept() }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	conn, err := s.streams.DialContext(ctx, string(address))
	if err != nil && s.ctx.Err() != nil {
		return nil, errors.Join(err, context.Canceled)
	}
	return conn, err
}

// Addr implements net.Listener: the address the other servers dial.
func (s *streamLayer) Addr() net.Addr { return s.addr }

// Close stops accepting and aborts the dials in progress.
func (s *streamLayer) Close() error {
	s.cancel()
	return s.streams.Close()
}

// addressProvider resolves a server ID to the address to dial at the time
// of the dial (raft.ServerAddressProvider): servers are identified by name
// and a node may come back at another address (a pod's new IP).
type addressProvider func(id string) (string, bool)

// errUnknownServer makes Raft fall back to the address recorded in its
// configuration.
var errUnknownServer = errors.New("raftstore: no current address for the server")

func (p addressProvider) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	addr, ok := p(string(id))
	if !ok {
		return "", fmt.Errorf("%w %s", errUnknownServer, id)
	}
	return raft.ServerAddress(addr), nil
}
