package ring

import "fmt"

// channelKeys returns n distinct channel names shaped like the real ones:
// a few prefixes with numeric suffixes, as Discourse names its channels.
func channelKeys(n int) []string {
	prefixes := []string{"topic", "chat-reply", "discourse-presence", "site"}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("/%s/%d", prefixes[i%len(prefixes)], i)
	}
	return keys
}

// nodeNames returns "node-1" … "node-n".
func nodeNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("node-%d", i+1)
	}
	return names
}

// ownerLoads counts how many keys each member owns.
func ownerLoads(r *Ring, keys []string) map[string]int {
	loads := make(map[string]int, r.Len())
	for _, m := range r.Members() {
		loads[m] = 0
	}
	for _, k := range keys {
		loads[r.Owner(k)]++
	}
	return loads
}

// spread returns max/mean and min/mean of the loads.
func spread(loads map[string]int, total int) (maxRatio, minRatio float64) {
	mean := float64(total) / float64(len(loads))
	lo, hi := total, 0
	for _, n := range loads {
		lo, hi = min(lo, n), max(hi, n)
	}
	return float64(hi) / mean, float64(lo) / mean
}

// without returns members minus the given names.
func without(members []string, drop ...string) []string {
	out := make([]string, 0, len(members))
	for _, m := range members {
		skip := false
		for _, d := range drop {
			skip = skip || m == d
		}
		if !skip {
			out = append(out, m)
		}
	}
	return out
}
