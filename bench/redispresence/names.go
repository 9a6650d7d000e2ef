package redispresence

import "unicode/utf8"

// channelPrefix returns the prefix of a valid channel name
// "/<prefix>/<rest>" (prefix of [a-zA-Z0-9_-], rest non-empty, valid UTF-8
// without control characters, at most MaxChannelNameBytes in all), with the
// node's rules; "" and false for an invalid name.
func channelPrefix(name string) (string, bool) {
	if len(name) > MaxChannelNameBytes || len(name) < 4 || name[0] != '/' {
		return "", false
	}
	end := 1
	for end < len(name) && prefixByte(name[end]) {
		end++
	}
	if end == 1 || end+1 >= len(name) || name[end] != '/' {
		return "", false
	}
	if !cleanText(name[end+1:]) {
		return "", false
	}
	return name[1:end], true
}

func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for i := range len(p) {
		if !prefixByte(p[i]) {
			return false
		}
	}
	return true
}

func prefixByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-'
}

// cleanText reports whether s is valid UTF-8 without C0, DEL or C1 controls.
func cleanText(s string) bool {
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b < 0x20 || b == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || r >= 0x80 && r <= 0x9f {
			return false
		}
		i += size
	}
	return true
}
