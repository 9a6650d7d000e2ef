package autopilot

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// minDemotedVoters is the fewest voters a demotion may leave: fewer than
// three voters tolerate no failure, so two voters are kept rather than
// demoting one of them for the sake of an odd count.
const minDemotedVoters = 3

// Voters returns how many of n healthy servers should vote under the cap
// maxVoters (odd): the largest odd number not above either, and at least
// one. An odd count tolerates as many failures as the even count above it
// with a smaller quorum.
func Voters(n, maxVoters int) int {
	v := min(n, maxVoters)
	if v%2 == 0 {
		v--
	}
	return max(v, 1)
}

// candidate is one server of the configuration as the suffrage plan sees it.
type candidate struct {
	id    string
	voter bool
	alive bool // its member is alive: not leaving, left, failed or unknown
	// stable: a non-voter that has been healthy (caught up, in contact) for
	// the stabilization period, since healthySince.
	stable       bool
	healthySince time.Time
}

// planSuffrage decides one round's promotions or demotions, never both:
//
//   - n is the number of alive voters plus stable non-voters, and the
//     target Voters(n, maxVoters);
//   - fewer alive voters than the target: the non-voters that have been
//     stable longest are promoted (a failed voter not yet removed counts as
//     missing, so its replacement gets a vote before it is reaped);
//   - more alive voters than the target, every voter alive and at least
//     minDemotedVoters kept: the surplus is demoted, never the leader,
//     greatest name first.
func planSuffrage(servers []candidate, leader string, maxVoters int) (promote, demote []string) {
	var aliveVoters []candidate
	var ready []candidate // stable non-voters
	allVotersAlive := true
	for _, c := range servers {
		switch {
		case c.voter && c.alive:
			aliveVoters = append(aliveVoters, c)
		case c.voter:
			allVotersAlive = false
		case c.alive && c.stable:
			ready = append(ready, c)
		}
	}
	target := Voters(len(aliveVoters)+len(ready), maxVoters)
	switch {
	case len(aliveVoters) < target:
		slices.SortFunc(ready, func(a, b candidate) int {
			return cmp.Or(a.healthySince.Compare(b.healthySince), strings.Compare(a.id, b.id))
		})
		for _, c := range ready[:min(len(ready), target-len(aliveVoters))] {
			promote = append(promote, c.id)
		}
	case len(aliveVoters) > target && allVotersAlive && target >= minDemotedVoters:
		slices.SortFunc(aliveVoters, func(a, b candidate) int { return strings.Compare(b.id, a.id) })
		surplus := len(aliveVoters) - target
		for _, c := range aliveVoters {
			if surplus == 0 {
				break
			}
			if c.id != leader {
				demote = append(demote, c.id)
				surplus--
			}
		}
	}
	return promote, demote
}

// removal is a server to take out of the configuration, and why.
type removal struct {
	id    string
	voter bool
	// left: its node announced its departure, and keeps Raft running until
	// it is removed (WaitRemoved), so the removal commits with its vote if
	// need be. Otherwise the node failed or is unknown.
	left   bool
	reason string
}

// capRemovals keeps, of the planned removals, those of servers that left
// and of non-voters, and at most (voters-1)/2 failed voters (Consul's
// rule): removing a majority of the voters in one round on the strength of
// failure detection alone is never safe.
func capRemovals(planned []removal, voters int) []removal {
	budget := (voters - 1) / 2
	out := make([]removal, 0, len(planned))
	for _, r := range planned {
		if r.voter && !r.left {
			if budget == 0 {
				continue
			}
			budget--
		}
		out = append(out, r)
	}
	return out
}

func sortByName(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
}
