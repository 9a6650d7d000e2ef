package swarm

// Matcher says which data line is the awaited enter: one holding both
// `"channel":"<channel>"` and `"entering_users":[{"id":"<user>"`, as the
// node encodes an entering_users message of that user in that channel. The
// patterns run over the bytes as they arrive (Knuth–Morris–Pratt), so a
// stream keeps only two small counters of them.
type Matcher struct {
	channel, enter pattern
}

// NewMatcher returns the Matcher of user's enter into channel. Neither may
// need JSON escaping (no quote, backslash, control character, <, > or &).
func NewMatcher(channel, user string) *Matcher {
	return &Matcher{
		channel: newPattern(`"channel":"` + channel + `"`),
		enter:   newPattern(`"entering_users":[{"id":"` + user + `"`),
	}
}

// pattern is a byte string with its KMP failure table.
type pattern struct {
	text []byte
	fail []uint16
}

func newPattern(s string) pattern {
	p := pattern{text: []byte(s), fail: make([]uint16, len(s))}
	k := 0
	for i := 1; i < len(s); i++ {
		for k > 0 && s[i] != s[k] {
			k = int(p.fail[k-1])
		}
		if s[i] == s[k] {
			k++
		}
		p.fail[i] = uint16(k)
	}
	return p
}

// feed advances the match state (bytes of the pattern matched so far) over
// b and reports whether the whole pattern was seen.
func (p *pattern) feed(state uint16, b []byte) (uint16, bool) {
	k := int(state)
	for _, c := range b {
		for k > 0 && c != p.text[k] {
			k = int(p.fail[k-1])
		}
		if c == p.text[k] {
			k++
		}
		if k == len(p.text) {
			return 0, true
		}
	}
	return uint16(k), false
}
