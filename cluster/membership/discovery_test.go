package membership

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// loopbackMembers starts one member on each of the loopback addresses
// 127.0.0.<first>, <first+1>... sharing one port, as the pods behind a DNS
// name share theirs; none joins another. It skips the test where such
// addresses cannot be bound.
func loopbackMembers(t *testing.T, first, n int) (ms []*Membership, ips []string, port int) {
	t.Helper()
	port = freeGossipPort(t)
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", first+i)
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			t.Skipf("cannot bind %s: %v", ip, err)
		}
		ln.Close()
		ms = append(ms, startRejoinMember(t, fmt.Sprintf("m%d", first+i), net.JoinHostPort(ip, strconv.Itoa(port)), 0, 0))
		ips = append(ips, ip)
	}
	return ms, ips, port
}

// sees reports whether m sees exactly n live members.
func sees(m *Membership, n int) func() bool {
	return func() bool { return len(m.Members()) == n }
}

// TestDiscoveryJoinsEveryAddressOfAName: three members that do not know
// each other stand behind one DNS name; a fourth, told only the name, joins
// every address it resolves to, and the four form one cluster (joining one
// of them would have left the other two apart).
func TestDiscoveryJoinsEveryAddressOfAName(t *testing.T) {
	ms, ips, _ := loopbackMembers(t, 11, 4)
	r := &fakeResolver{}
	r.set("presence", ips[:3]...)
	d := NewDiscovery(ms[3], DiscoveryConfig{Seeds: []string{"presence"}, Resolver: r,
		JoinMinBackoff: 10 * time.Millisecond, JoinMaxBackoff: 50 * time.Millisecond})
	if !d.Join(context.Background()) {
		t.Fatal("Join gave up")
	}
	for _, m := range ms {
		testkit.WaitForWithin(t, rejoinTestTimeout, m.LocalName()+" to see the four", sees(m, 4))
	}
}

// TestDiscoveryLooksSeedsUpUntilFound: while the name is unknown to DNS,
// then resolves to this node alone (the first pod of a StatefulSet), Join
// keeps looking it up; once DNS lists another node, it joins it.
func TestDiscoveryLooksSeedsUpUntilFound(t *testing.T) {
	ms, ips, _ := loopbackMembers(t, 21, 2)
	r := &fakeResolver{}
	d := NewDiscovery(ms[1], DiscoveryConfig{Seeds: []string{"presence"}, Resolver: r,
		JoinMinBackoff: 5 * time.Millisecond, JoinMaxBackoff: 20 * time.Millisecond})
	joined := make(chan bool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { joined <- d.Join(ctx) }()
	testkit.WaitFor(t, "lookups of an unknown name", func() bool { return r.count() >= 3 })
	r.set("presence", ips[1])
	seen := r.count()
	testkit.WaitFor(t, "lookups of a name listing only this node", func() bool { return r.count() >= seen+3 })
	select {
	case <-joined:
		t.Fatal("joined with no other node in DNS")
	default:
	}
	r.set("presence", ips...)
	select {
	case ok := <-joined:
		if !ok {
			t.Fatal("Join gave up")
		}
	case <-time.After(rejoinTestTimeout):
		t.Fatal("Join did not return once DNS listed another node")
	}
	testkit.WaitForWithin(t, rejoinTestTimeout, "both members to meet", sees(ms[0], 2))
}

// TestDiscoveryHealJoinsNodesNewInDNS: after joining, the healing rounds
// look the name up again and join a node DNS lists that gossip has not
// brought in (a pod started alone, a partition's other side).
func TestDiscoveryHealJoinsNodesNewInDNS(t *testing.T) {
	ms, ips, _ := loopbackMembers(t, 31, 3)
	r := &fakeResolver{}
	r.set("presence", ips[:2]...)
	d := NewDiscovery(ms[0], DiscoveryConfig{Seeds: []string{"presence"}, Resolver: r,
		JoinMinBackoff: 5 * time.Millisecond, JoinMaxBackoff: 20 * time.Millisecond})
	if !d.Join(context.Background()) {
		t.Fatal("Join gave up")
	}
	testkit.WaitForWithin(t, rejoinTestTimeout, "the first two to meet", sees(ms[1], 2))
	runHeal(t, d)
	r.set("presence", ips...)
	for _, m := range ms {
		testkit.WaitForWithin(t, rejoinTestTimeout, m.LocalName()+" to see the three", sees(m, 3))
	}
}

// TestRestartAtANewAddress: a node crashes and comes back at once under
// the same name at another address (a rescheduled container). memberlist
// refuses the new address while the old one is still believed alive (a
// name conflict); once failure detection declared the old one dead and
// DeadNodeReclaimTime passed, the others take the new address.
func TestRestartAtANewAddress(t *testing.T) {
	a := startRejoinMember(t, "a", "127.0.0.1:"+strconv.Itoa(freeGossipPort(t)), 0, 0)
	b := startRejoinMember(t, "b", "127.0.0.1:"+strconv.Itoa(freeGossipPort(t)), 0, 0)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForWithin(t, rejoinTestTimeout, "a to see b", sees(a, 2))
	oldAddr := b.Addr()
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	back := startRejoinMember(t, "b", "127.0.0.1:"+strconv.Itoa(freeGossipPort(t)), 0, 0)
	d := NewDiscovery(back, DiscoveryConfig{Seeds: []string{a.Addr()},
		JoinMinBackoff: 10 * time.Millisecond, JoinMaxBackoff: 100 * time.Millisecond})
	if !d.Join(context.Background()) {
		t.Fatal("Join gave up")
	}
	if addr := addrOf(a, "b"); addr != oldAddr {
		t.Fatalf("a took b's new address %s at once, before the old one %s was declared dead", addr, oldAddr)
	}
	runHeal(t, d)
	testkit.WaitForWithin(t, rejoinTestTimeout, "a to take b's new address", func() bool { return addrOf(a, "b") == back.Addr() })
}

// addrOf returns the address at which m sees the live member name.
func addrOf(m *Membership, name string) string {
	members := m.Members()
	i := slices.IndexFunc(members, func(mem Member) bool { return mem.Name == name })
	if i < 0 {
		return ""
	}
	return members[i].Addr
}
