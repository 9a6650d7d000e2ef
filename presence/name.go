package presence

import "unicode/utf8"

// MaxPrefixBytes is the longest prefix that can appear in a valid channel
// name: the name also needs two slashes and a non-empty rest.
const MaxPrefixBytes = MaxChannelNameBytes - 3

// ValidChannelName reports whether name is "/<prefix>/<rest>": prefix made of
// [a-zA-Z0-9_-], rest non-empty, the whole name valid UTF-8 of at most
// MaxChannelNameBytes bytes without control characters (C0, DEL, C1).
// It runs on every request, so it neither allocates nor backtracks.
func ValidChannelName(name string) bool {
	_, ok := ChannelPrefix(name)
	return ok
}

// ChannelPrefix returns the prefix of name and true when name is valid
// (see ValidChannelName); otherwise "" and false. The prefix shares name's
// memory.
func ChannelPrefix(name string) (string, bool) {
	if len(name) > MaxChannelNameBytes || len(name) < 4 || name[0] != '/' {
		return "", false
	}
	end := 1
	for end < len(name) && prefixByte(name[end]) {
		end++
	}
	// The prefix must be non-empty, followed by '/' and a non-empty rest.
	if end == 1 || end+1 >= len(name) || name[end] != '/' {
		return "", false
	}
	if !cleanText(name[end+1:]) {
		return "", false
	}
	return name[1:end], true
}

// ValidPrefix reports whether prefix can be the prefix of a valid channel
// name: one or more of [a-zA-Z0-9_-], at most MaxPrefixBytes bytes.
func ValidPrefix(prefix string) bool {
	if prefix == "" || len(prefix) > MaxPrefixBytes {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if !prefixByte(prefix[i]) {
			return false
		}
	}
	return true
}

func prefixByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// cleanText reports whether s is valid UTF-8 without C0, DEL or C1 control
// characters.
func cleanText(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		// A lone RuneError of size 1 is an invalid byte; a real U+FFFD has size 3.
		if r == utf8.RuneError && size == 1 || 0x80 <= r && r <= 0x9f {
			return false
		}
		i += size
	}
	return true
}
