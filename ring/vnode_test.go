package ring

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
)

// vnodeRing is the alternative the package did not choose: a classic hash
// ring with virtual nodes. It lives in a test file only so that the choice
// of rendezvous hashing stays measured rather than asserted.
type vnodeRing struct {
	points []uint64 // ascending positions on the ring
	owners []int    // owners[i] indexes names for points[i]
	names  []string
}

func newVnodeRing(members []string, vnodes int) *vnodeRing {
	r := New(0, members)
	type point struct {
		pos   uint64
		owner int
	}
	pts := make([]point, 0, len(r.names)*vnodes)
	for i, name := range r.names {
		for v := range vnodes {
			pts = append(pts, point{hashString(name + "#" + strconv.Itoa(v)), i})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		if a.pos != b.pos {
			return cmpUint64(a.pos, b.pos)
		}
		return a.owner - b.owner
	})
	v := &vnodeRing{names: r.names, points: make([]uint64, len(pts)), owners: make([]int, len(pts))}
	for i, p := range pts {
		v.points[i], v.owners[i] = p.pos, p.owner
	}
	return v
}

func cmpUint64(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

// owner is the member of the first point clockwise from the key's hash.
func (v *vnodeRing) owner(key string) string {
	i, _ := slices.BinarySearch(v.points, hashString(key))
	if i == len(v.points) {
		i = 0
	}
	return v.names[v.owners[i]]
}

// TestCompareVirtualNodes records balance and movement of virtual-node rings
// next to rendezvous hashing, and checks the claim the package doc makes:
// rendezvous balances at least as well as a ring with 160 virtual nodes.
func TestCompareVirtualNodes(t *testing.T) {
	keys := channelKeys(balanceKeys)
	for _, size := range []int{3, 5, 10} {
		members := nodeNames(size)
		hrw, _ := spread(ownerLoads(New(1, members), keys), len(keys))
		t.Logf("%2d members: rendezvous max/mean %.3f", size, hrw)
		for _, vnodes := range []int{40, 160, 500} {
			ring := newVnodeRing(members, vnodes)
			loads := map[string]int{}
			for _, k := range keys {
				loads[ring.owner(k)]++
			}
			maxRatio, _ := spread(loads, len(keys))
			grown := newVnodeRing(nodeNames(size+1), vnodes)
			moved := 0
			for _, k := range keys {
				if grown.owner(k) != ring.owner(k) {
					moved++
				}
			}
			t.Logf("%2d members: %3d virtual nodes max/mean %.3f, join moves %.4f (ideal %.4f)",
				size, vnodes, maxRatio, float64(moved)/float64(len(keys)), 1/float64(size+1))
			if vnodes == 160 && hrw > maxRatio {
				t.Errorf("%d members: rendezvous max/mean %.3f worse than 160 virtual nodes %.3f", size, hrw, maxRatio)
			}
		}
	}
}

func BenchmarkVnodeOwner(b *testing.B) {
	keys := channelKeys(1024)
	for _, size := range []int{3, 10, 100} {
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			r := newVnodeRing(nodeNames(size), 160)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				sinkString = r.owner(keys[i&1023])
				i++
			}
		})
	}
}

func BenchmarkVnodeNew(b *testing.B) {
	for _, size := range []int{10, 100} {
		members := nodeNames(size)
		b.Run(fmt.Sprintf("members=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				newVnodeRing(members, 160)
			}
		})
	}
}
