package api

import (
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// The hot requests are tiny and regular: {"client_id":"c","present_channels":
// ["/a"]}. Decoding them with reflection costs more than the presence work
// they ask for, so the common shape is scanned by hand. Whenever the scanner
// is not sure (escapes, other keys, repeated keys, nulls, odd tokens) it
// gives up and the body takes the general encoding/json path, which has the
// final word on every error. Encoding likewise writes exactly the bytes
// json.Marshal would.

// jsonScanner reads the common shape of an update body.
type jsonScanner struct {
	data []byte
	i    int
}

func (s *jsonScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, reporting whether c was there.
func (s *jsonScanner) consume(c byte) bool {
	s.space()
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// raw reads a string without escapes and returns its bytes (in data); ok
// is false for anything else, including invalid UTF-8 (which encoding/json
// would replace).
func (s *jsonScanner) raw() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start, ascii := s.i, true
	for ; s.i < len(s.data); s.i++ {
		switch c := s.data[s.i]; {
		case c == '"':
			raw := s.data[start:s.i]
			s.i++
			if !ascii && !utf8.Valid(raw) {
				return nil, false
			}
			return raw, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// str is raw as a string of its own.
func (s *jsonScanner) str() (string, bool) {
	raw, ok := s.raw()
	return string(raw), ok
}

// strings reads an array of such strings.
func (s *jsonScanner) strings() ([]string, bool) {
	if !s.consume('[') {
		return nil, false
	}
	list := []string{}
	if s.consume(']') {
		return list, true
	}
	for {
		v, ok := s.str()
		if !ok {
			return nil, false
		}
		list = append(list, v)
		if s.consume(']') {
			return list, true
		}
		if !s.consume(',') {
			return nil, false
		}
	}
}

// scanUpdateJSON decodes the common shape of an update body. ok is false
// when the body is not in that shape; the caller then decodes it generally.
// The request is not validated yet.
func scanUpdateJSON(data []byte) (req updateRequest, ok bool) {
	s := jsonScanner{data: data}
	if !s.consume('{') {
		return updateRequest{}, false
	}
	var seenID, seenPresent, seenLeave bool
	for {
		key, ok := s.raw()
		if !ok || !s.consume(':') {
			return updateRequest{}, false
		}
		switch { // string(key) in a comparison does not allocate
		case string(key) == fieldClientID && !seenID:
			seenID = true
			req.ClientID, ok = s.str()
		case string(key) == fieldPresent && !seenPresent:
			seenPresent = true
			req.Present, ok = s.strings()
		case string(key) == fieldLeave && !seenLeave:
			seenLeave = true
			req.Leave, ok = s.strings()
		default:
			return updateRequest{}, false
		}
		if !ok {
			return updateRequest{}, false
		}
		if s.consume('}') {
			break
		}
		if !s.consume(',') {
			return updateRequest{}, false
		}
	}
	s.space()
	if s.i != len(s.data) || !seenID {
		return updateRequest{}, false
	}
	return req, true
}

// appendJSONString appends s as encoding/json writes it (HTML-safe).
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// appendUpdateResult appends the JSON object {"<name>": <ok>, ...} of the
// names (deduplicated) with keys sorted, as json.Marshal writes a map.
func appendUpdateResult(buf []byte, names []string, result map[string]bool) []byte {
	if !slices.IsSorted(names) {
		names = slices.Sorted(slices.Values(names))
	}
	buf = append(buf, '{')
	for i, name := range names {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendJSONString(buf, name)
		if result[name] {
			buf = append(buf, ":true"...)
		} else {
			buf = append(buf, ":false"...)
		}
	}
	return append(buf, '}')
}
