package testcluster

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// network holds the proxies of a cluster started WithPartitions and the
// cut between its nodes.
//
// Node i binds its gossip and RPC ports on 127.0.0.1 and advertises the
// host 127.0.0.(101+i) (server.Config.Advertise keeps the bound ports),
// where a proxy listens on the same ports and forwards to 127.0.0.1. So all
// traffic to node i passes its proxy, which drops what comes from a node on
// the other side of a cut. The sender is known for gossip datagrams (sent
// from the sender's bound socket) and, from the first message, for
// memberlist streams (the nodes the message names). The RPC port carries
// calls and Raft; the proxy reads what the dialler sends, opening the
// sealed records with the cluster key as a node would (rpctap.go): a Raft
// stream is known from its first request (the RPC header's address), a
// connection of calls from its first request that names its sender (see
// rpcSender). Until then, and always with TLS, which the proxy cannot
// read, a connection is cut only when its destination is cut off from
// every other node.
type network struct {
	t   testing.TB
	key []byte // cluster key (gossip and RPC); nil for none
	tls bool   // node-to-node TLS: the proxy cannot read RPC connections

	mu      sync.Mutex
	names   []string // node names by index
	rpcs    []string // advertised RPC addresses by index
	ports   *testkit.Ports
	sources map[string]int // bound gossip address -> node index
	side    map[int]int    // node -> side while partitioned; absent: reaches all
	proxies []*nodeProxy

	datagrams atomic.Int64        // datagrams dropped by a cut
	streams   atomic.Int64        // connections refused or closed by a cut
	appends   map[int][]time.Time // refused Raft appends carrying entries, by destination; guarded by mu

	capture *capture // nil unless the cluster records its traffic (WithCapture)
}

// CutStats counts what the cuts dropped so far.
type CutStats struct {
	Datagrams int64 // gossip datagrams dropped
	Streams   int64 // TCP connections refused or closed
}

// proxyHostBase is the last byte of node 0's advertised loopback address.
const proxyHostBase = 101

func newNetwork(t testing.TB, key []byte, tls bool, capture *capture, ports *testkit.Ports) *network {
	// Linux routes all of 127.0.0.0/8 to loopback; other systems may not.
	ln, err := net.Listen("tcp", proxyHost(0)+":0")
	if err != nil {
		t.Skipf("testcluster: partitions need loopback addresses beyond 127.0.0.1: %v", err)
	}
	ln.Close()
	nw := &network{t: t, key: key, tls: tls, capture: capture, ports: ports, sources: map[string]int{}}
	// Registered before the cluster's own cleanup, so it runs after the
	// nodes are gone.
	t.Cleanup(nw.close)
	return nw
}

// close stops every proxy.
func (nw *network) close() {
	nw.mu.Lock()
	proxies := nw.proxies
	nw.mu.Unlock()
	for _, p := range proxies {
		p.close()
	}
}

func proxyHost(i int) string { return "127.0.0." + strconv.Itoa(proxyHostBase+i) }

// place gives node i fixed ports behind proxies and starts them; the
// proxies outlive restarts of the node and stop at the test's end.
func (nw *network) place(i int, cfg *server.Config) {
	nw.t.Helper()
	host := proxyHost(i)
	p := &nodeProxy{}
	var gossipPort, rpcPort int
	p.gossip, p.udp, gossipPort = nw.listen(host, true)
	p.rpc, _, rpcPort = nw.listen(host, false)
	cfg.Advertise = host
	cfg.HTTPAddr = net.JoinHostPort(host, "0") // HTTP is never cut: bind it where it is advertised
	cfg.GossipAddr = loopback(gossipPort)
	cfg.RPCAddr = loopback(rpcPort)

	nw.mu.Lock()
	nw.names = append(nw.names, cfg.Name)
	nw.rpcs = append(nw.rpcs, net.JoinHostPort(host, strconv.Itoa(rpcPort)))
	nw.sources[cfg.GossipAddr] = i
	nw.proxies = append(nw.proxies, p)
	nw.mu.Unlock()

	p.gossip.start(nw, i, svcGossip, cfg.GossipAddr)
	p.rpc.start(nw, i, svcRPC, cfg.RPCAddr)
	p.udp.start(nw, i, cfg.GossipAddr)
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// listen picks a port free on 127.0.0.1 (for TCP, and UDP when udp is
// set), which the node will bind, and binds the proxy's listeners on host
// with that port.
func (nw *network) listen(host string, udp bool) (*streamProxy, *packetProxy, int) {
	nw.t.Helper()
	for range 100 {
		port := nw.ports.MustTake(nw.t, udp)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		sp := &streamProxy{ln: ln, conns: map[*pipe]bool{}}
		if !udp {
			return sp, nil, port
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			ln.Close()
			continue
		}
		return sp, &packetProxy{in: pc}, port
	}
	nw.t.Fatalf("testcluster: no port free for a proxy on %s", host)
	return nil, nil, 0
}

// setSides records a partition (nil: none) and closes the connections it cuts.
func (nw *network) setSides(sides [][]int) {
	nw.mu.Lock()
	nw.side = nil
	if len(sides) > 0 {
		nw.side = map[int]int{}
		for s, nodes := range sides {
			for _, i := range nodes {
				nw.side[i] = s
			}
		}
	}
	proxies := append([]*nodeProxy(nil), nw.proxies...)
	nw.mu.Unlock()
	for _, p := range proxies {
		p.sweep()
	}
}

func (nw *network) blockedLocked(a, b int) bool {
	sa, okA := nw.side[a]
	sb, okB := nw.side[b]
	return a != b && okA && okB && sa != sb
}

// refuses reports whether traffic to node dst involving parties (its
// sender, or the nodes its first message names) crosses a cut. Traffic of
// unknown origin is cut only when dst is cut off from every other node.
func (nw *network) refuses(dst int, parties []int) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if len(parties) == 0 {
		return nw.isolatedLocked(dst)
	}
	for _, p := range parties {
		if nw.blockedLocked(p, dst) {
			return true
		}
	}
	return false
}

func (nw *network) isolated(dst int) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.isolatedLocked(dst)
}

func (nw *network) isolatedLocked(dst int) bool {
	if len(nw.names) < 2 {
		return false
	}
	for i := range nw.names {
		if i != dst && !nw.blockedLocked(i, dst) {
			return false
		}
	}
	return true
}

// sender maps a datagram's source to the node whose gossip socket sent it.
func (nw *network) sender(addr net.Addr) []int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if i, ok := nw.sources[addr.String()]; ok {
		return []int{i}
	}
	return nil
}

func (nw *network) nodeNames() []string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return append([]string(nil), nw.names...)
}

// noteRefusedAppend records that a Raft append carrying entries to node
// dst was refused.
func (nw *network) noteRefusedAppend(dst int) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.appends == nil {
		nw.appends = map[int][]time.Time{}
	}
	nw.appends[dst] = append(nw.appends[dst], time.Now())
}

func (nw *network) refusedAppends(dst int) []time.Time {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return append([]time.Time(nil), nw.appends[dst]...)
}

func (nw *network) rpcAddrs() []string {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return append([]string(nil), nw.rpcs...)
}

// rpcSender returns the sender a node-to-node request body names, -1 if
// none. The router's calls that carry a node (replication, install,
// interest, catch-up, extract) name their sender as the first node in the
// body, as a length-prefixed name followed by its RPC address; a push
// opens with the sender's name alone. Other calls (forwarded updates and
// reads, the server's calls) name nobody.
func (nw *network) rpcSender(body []byte) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	best, at := -1, len(body)
	for i, name := range nw.names {
		member := append(append([]byte{byte(len(name))}, name...), byte(len(nw.rpcs[i])))
		member = append(member, nw.rpcs[i]...)
		if j := bytes.Index(body, member); j >= 0 && j < at {
			best, at = i, j
		}
	}
	if best >= 0 {
		return best
	}
	for i, name := range nw.names {
		if bytes.HasPrefix(body, append([]byte{byte(len(name))}, name...)) {
			return i
		}
	}
	return -1
}

// service is a proxied protocol.
type service int

const (
	svcGossip service = iota // memberlist streams
	svcRPC                   // the node-to-node transport: calls and Raft
)

// nodeProxy stands at one node's advertised addresses.
type nodeProxy struct {
	gossip, rpc *streamProxy
	udp         *packetProxy
}

func (p *nodeProxy) sweep() {
	for _, sp := range []*streamProxy{p.gossip, p.rpc} {
		sp.sweep()
	}
}

func (p *nodeProxy) close() {
	p.udp.close()
	for _, sp := range []*streamProxy{p.gossip, p.rpc} {
		sp.close()
	}
}

// streamProxy forwards one TCP port of a node.
type streamProxy struct {
	nw     *network
	dst    int
	kind   service
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*pipe]bool
	closed bool
	wg     sync.WaitGroup
}

// pipe is one forwarded connection and the nodes it was found to involve
// (guarded by the proxy's mutex: an RPC connection learns them late).
type pipe struct {
	in, out net.Conn
	parties []int
}

func (sp *streamProxy) start(nw *network, dst int, kind service, target string) {
	sp.nw, sp.dst, sp.kind, sp.target = nw, dst, kind, target
	sp.wg.Go(sp.accept)
}

func (sp *streamProxy) accept() {
	for {
		in, err := sp.ln.Accept()
		if err != nil {
			return
		}
		sp.wg.Go(func() { sp.forward(in) })
	}
}

// forward learns what it can of the sender, then copies both ways until
// either side or a cut ends the connection.
func (sp *streamProxy) forward(in net.Conn) {
	if sp.kind == svcRPC {
		sp.forwardRPC(in)
		return
	}
	parties, head := sp.sniff(in)
	p := &pipe{in: in, parties: parties}
	if sp.nw.refuses(sp.dst, parties) {
		sp.refuse(p)
		return
	}
	out, err := net.DialTimeout("tcp", sp.target, time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.out = out
	if !sp.add(p) {
		return
	}
	defer sp.remove(p)
	sp.nw.capture.add(head)
	if _, err := out.Write(head); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(out, sp.nw.capture.reader(in))
		out.Close()
		in.Close()
	})
	_, _ = io.Copy(in, sp.nw.capture.reader(out))
	in.Close()
	out.Close()
	wg.Wait()
}

// sniff reads a memberlist stream's first message, which tells who sent it.
func (sp *streamProxy) sniff(in net.Conn) (parties []int, head []byte) {
	if !sp.nw.isolated(sp.dst) {
		return sniffGossip(in, sp.nw.key, sp.nw.nodeNames())
	}
	return nil, nil
}

// refuse closes a connection a cut refuses and counts it.
func (sp *streamProxy) refuse(p *pipe) {
	sp.nw.streams.Add(1)
	p.in.Close()
	if p.out != nil {
		p.out.Close()
	}
}

// add registers p unless a cut refuses it; the check and the
// registration are atomic with respect to sweep.
func (sp *streamProxy) add(p *pipe) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		p.in.Close()
		p.out.Close()
		return false
	}
	if sp.nw.refuses(sp.dst, p.parties) {
		sp.refuse(p)
		return false
	}
	sp.conns[p] = true
	return true
}

func (sp *streamProxy) remove(p *pipe) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	delete(sp.conns, p)
}

// sweep closes the connections the current cut refuses.
func (sp *streamProxy) sweep() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for p := range sp.conns {
		if sp.nw.refuses(sp.dst, p.parties) {
			sp.nw.streams.Add(1)
			p.in.Close()
			p.out.Close()
		}
	}
}

func (sp *streamProxy) close() {
	sp.ln.Close()
	sp.mu.Lock()
	sp.closed = true
	for p := range sp.conns {
		p.in.Close()
		p.out.Close()
	}
	sp.mu.Unlock()
	sp.wg.Wait()
}

// packetProxy forwards a node's gossip datagrams. It sends them from a
// socket of its own: memberlist answers a probe at the address the probe
// names (the prober's proxy), never at a datagram's source.
type packetProxy struct {
	nw     *network
	dst    int
	in     net.PacketConn
	out    net.PacketConn
	target *net.UDPAddr
	done   chan struct{}
}

func (pp *packetProxy) start(nw *network, dst int, target string) {
	pp.nw, pp.dst, pp.done = nw, dst, make(chan struct{})
	var err error
	if pp.target, err = net.ResolveUDPAddr("udp", target); err == nil {
		pp.out, err = net.ListenPacket("udp", "127.0.0.1:0")
	}
	if err != nil {
		nw.t.Fatalf("testcluster: gossip proxy: %v", err)
	}
	go pp.run()
}

func (pp *packetProxy) run() {
	defer close(pp.done)
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pp.in.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if pp.nw.refuses(pp.dst, pp.nw.sender(from)) {
			pp.nw.datagrams.Add(1)
			continue
		}
		pp.nw.capture.add(buf[:n])
		_, _ = pp.out.WriteTo(buf[:n], pp.target)
	}
}

func (pp *packetProxy) close() {
	pp.in.Close()
	if pp.out != nil {
		pp.out.Close()
		<-pp.done
	}
}
