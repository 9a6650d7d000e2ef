package membership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// partitionHold is how long a test partition outlasts its detection: past
// memberlist's GossipToTheDeadTime in its fast timings (2 s), after which
// nobody gossips to the dead or probes them, as after the container
// suite's 20 s disconnect. It is the fault's duration, not a wait for a
// result.
const partitionHold = 4 * time.Second

func TestRejoinTargets(t *testing.T) {
	live := []Member{
		{Name: "a", Addr: "10.0.0.1:7946"},
		{Name: "b", Addr: "10.0.0.2:7946"},
	}
	failed := []Member{
		{Name: "c", Addr: "10.0.0.3:7946"},
		{Name: "d", Addr: "10.0.0.4:7946"}, // also a seed: joined once
		{Name: "b", Addr: "10.0.0.9:7946"}, // back alive at a new address
		{Name: "e", Addr: "10.0.0.2:7946"}, // its address is a live member's
		{Name: "f"},                        // no address known
	}
	seeds := []string{"10.0.0.1:7946", "10.0.0.4:7946", "10.0.0.5:7946", "10.0.0.5:7946"}
	got := rejoinTargets(live, failed, seeds)
	want := []string{"10.0.0.4:7946", "10.0.0.5:7946", "10.0.0.3:7946"}
	if !slices.Equal(got, want) {
		t.Fatalf("rejoinTargets = %v, want %v", got, want)
	}
	if got := rejoinTargets(live, nil, []string{"10.0.0.2:7946"}); len(got) != 0 {
		t.Fatalf("every seed live, every member alive: targets %v", got)
	}
}

// fakeResolver answers lookups from a table the test edits, and counts
// them.
type fakeResolver struct {
	mu      sync.Mutex
	hosts   map[string][]string
	lookups int
}

func (r *fakeResolver) set(host string, ips ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hosts == nil {
		r.hosts = map[string][]string{}
	}
	r.hosts[host] = ips
}

func (r *fakeResolver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups
}

var errNoSuchHost = errors.New("no such host")

func (r *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	ips, ok := r.hosts[host]
	if !ok {
		return nil, errNoSuchHost
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: net.ParseIP(ip)}
	}
	return out, nil
}

func TestSeedAddresses(t *testing.T) {
	ml := startRejoinMember(t, "a", "127.0.0.1:"+strconv.Itoa(freeGossipPort(t)), 0, 0)
	_, port, _ := net.SplitHostPort(ml.Addr())
	r := &fakeResolver{}
	r.set("node2", "172.28.0.12", "fd00::12", "172.28.0.12")
	r.set("node3", "172.28.0.13")
	d := NewDiscovery(ml, DiscoveryConfig{Resolver: r,
		Seeds: []string{"node2:7000", "10.0.0.7:7001", "nohost:7002", "node3", "node2:7000"}})
	got, err := d.seedAddrs(context.Background())
	want := []string{"172.28.0.12:7000", "[fd00::12]:7000", "10.0.0.7:7001", "172.28.0.13:" + port}
	if !slices.Equal(got, want) {
		t.Fatalf("seedAddrs = %v, want %v", got, want)
	}
	if !errors.Is(err, errNoSuchHost) {
		t.Fatalf("seedAddrs error %v, want the unresolved seed's", err)
	}
}

// TestRejoinHealsAPartitionThroughFailedMembers cuts three members off
// from each other until each sees the other two dead and memberlist gave
// up on them, then restores the network: one member's rejoiner, without
// seeds, merges the three again through the failed members' addresses.
func TestRejoinHealsAPartitionThroughFailedMembers(t *testing.T) {
	ms, proxies := startPartitionable(t, 3, 0)
	partition(t, ms, proxies)
	for _, p := range proxies {
		p.setCut(false)
	}
	runHeal(t, NewDiscovery(ms[0], DiscoveryConfig{}))
	waitMerged(t, ms)
}

// TestRejoinHealsAPartitionThroughSeeds: the same with two members, the
// rejoiner's member remembering no failure, so only its seed heals.
func TestRejoinHealsAPartitionThroughSeeds(t *testing.T) {
	ms, proxies := startPartitionable(t, 2, time.Nanosecond)
	partition(t, ms, proxies)
	if failed := ms[1].Failed(); len(failed) != 0 {
		t.Fatalf("member remembering no failure lists %v", failed)
	}
	for _, p := range proxies {
		p.setCut(false)
	}
	runHeal(t, NewDiscovery(ms[1], DiscoveryConfig{Seeds: []string{ms[0].Addr()}}))
	waitMerged(t, ms)
}

// TestRejoinRoundSkipsMembersThatLeft: a round dials a crashed member, but
// not one that left gracefully, nor live ones.
func TestRejoinRoundSkipsMembersThatLeft(t *testing.T) {
	ms, proxies := startPartitionable(t, 3, 0)
	if err := ms[1].Leave(rejoinTestTimeout); err != nil {
		t.Fatal(err)
	}
	ms[1].Shutdown()
	ms[2].Shutdown()
	testkit.WaitForWithin(t, rejoinTestTimeout, "node0 alone, node2 failed", func() bool {
		failed := ms[0].Failed()
		return len(ms[0].Members()) == 1 && len(failed) == 1 && failed[0].Name == "node2"
	})
	for _, p := range proxies {
		p.accepted.Store(0)
	}
	d := NewDiscovery(ms[0], DiscoveryConfig{})
	d.round(context.Background())
	if n := proxies[2].accepted.Load(); n == 0 {
		t.Error("the crashed member was not dialled")
	}
	if n := proxies[1].accepted.Load(); n != 0 {
		t.Errorf("the member that left was dialled %d times", n)
	}
	if n := proxies[0].accepted.Load(); n != 0 {
		t.Errorf("the node dialled itself %d times", n)
	}
}

// startPartitionable starts n members, each behind a gossipProxy that
// can cut it off, and joins them all through the first.
func startPartitionable(t *testing.T, n int, rememberFailed time.Duration) ([]*Membership, []*gossipProxy) {
	t.Helper()
	ms := make([]*Membership, n)
	proxies := make([]*gossipProxy, n)
	for i := range n {
		bind := "127.0.0.1:" + strconv.Itoa(freeGossipPort(t))
		proxies[i] = startGossipProxy(t, bind)
		ms[i] = startRejoinMember(t, fmt.Sprintf("node%d", i), bind, proxies[i].port(), rememberFailed)
	}
	for _, m := range ms[1:] {
		if _, err := m.Join([]string{ms[0].Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitMerged(t, ms)
	return ms, proxies
}

// partition cuts every proxy, waits until every member sees itself alone,
// then holds the cut for partitionHold.
func partition(t *testing.T, ms []*Membership, proxies []*gossipProxy) {
	t.Helper()
	for _, p := range proxies {
		p.setCut(true)
	}
	for _, m := range ms {
		testkit.WaitForWithin(t, rejoinTestTimeout, m.LocalName()+" to see the others dead", func() bool { return len(m.Members()) == 1 })
	}
	time.Sleep(partitionHold) // the fault itself, see partitionHold
}

// runHeal runs d's healing rounds every 50 ms until the test ends.
func runHeal(t *testing.T, d *Discovery) {
	d.cfg.JoinMaxBackoff = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Heal(ctx, func() bool { return false })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitMerged waits until every member sees all of them alive.
func waitMerged(t *testing.T, ms []*Membership) {
	t.Helper()
	for _, m := range ms {
		testkit.WaitForWithin(t, rejoinTestTimeout, m.LocalName()+" to see every member", func() bool { return len(m.Members()) == len(ms) })
	}
}

// startRejoinMember starts a member with fast timings bound at bind,
// advertising advertisePort when not zero.
func startRejoinMember(t *testing.T, name, bind string, advertisePort int, rememberFailed time.Duration) *Membership {
	t.Helper()
	m, err := Start(Config{
		Name: name, BindAddr: bind, AdvertisePort: advertisePort, Fast: true, RememberFailed: rememberFailed,
		Logger: testkit.Logger(t).With("node", name),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

// rejoinTestTimeout bounds every wait of these tests.
const rejoinTestTimeout = 20 * time.Second

// gossipPorts hands out the ports of these tests' members.
var gossipPorts testkit.Ports

// freeGossipPort returns a port free for TCP and UDP on 127.0.0.1.
func freeGossipPort(t *testing.T) int {
	t.Helper()
	return gossipPorts.MustTake(t, true)
}

// gossipProxy stands at a member's advertised address and forwards its
// gossip (UDP datagrams, TCP streams) to the member's bound address. Cut,
// it drops datagrams and closes streams: the member is unreachable, as a
// container taken off its network. memberlist answers a probe at the
// address the probe names as its source, which is the prober's proxy, so
// cutting every proxy cuts every path between the members.
type gossipProxy struct {
	target   string
	udp      net.PacketConn
	out      net.PacketConn // forwards from here: replies to it are dropped
	tcp      net.Listener
	accepted atomic.Int64 // TCP connections accepted

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startGossipProxy(t *testing.T, target string) *gossipProxy {
	t.Helper()
	p := &gossipProxy{target: target, conns: map[net.Conn]bool{}}
	for range 100 {
		addr := "127.0.0.1:" + strconv.Itoa(freeGossipPort(t))
		tcp, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			tcp.Close()
			continue
		}
		p.tcp, p.udp = tcp, udp
		break
	}
	if p.tcp == nil {
		t.Fatal("no port for a gossip proxy")
	}
	out, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.out = out
	p.wg.Add(2)
	go p.forwardPackets()
	go p.acceptStreams()
	t.Cleanup(p.close)
	return p
}

func (p *gossipProxy) port() int { return p.tcp.Addr().(*net.TCPAddr).Port }

func (p *gossipProxy) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// setCut cuts or restores the member's network; cutting ends its streams.
func (p *gossipProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *gossipProxy) forwardPackets() {
	defer p.wg.Done()
	target, err := net.ResolveUDPAddr("udp", p.target)
	if err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := p.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if !p.isCut() {
			_, _ = p.out.WriteTo(buf[:n], target)
		}
	}
}

func (p *gossipProxy) acceptStreams() {
	defer p.wg.Done()
	for {
		in, err := p.tcp.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Go(func() { p.pipe(in) })
	}
}

// pipe copies a stream both ways until either side or a cut ends it.
func (p *gossipProxy) pipe(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		in.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	p.conns[in], p.conns[out] = true, true
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, pair := range [][2]net.Conn{{in, out}, {out, in}} {
		wg.Go(func() {
			_, _ = io.Copy(pair[0], pair[1])
			pair[0].Close()
			pair[1].Close()
		})
	}
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, in)
	delete(p.conns, out)
	p.mu.Unlock()
}

func (p *gossipProxy) close() {
	p.tcp.Close()
	p.udp.Close()
	p.out.Close()
	p.setCut(true)
	p.wg.Wait()
}
