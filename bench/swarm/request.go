package swarm

import (
	"encoding/json"
	"net/url"
	"strings"
)

// SubscribeRequest is the HTTP/1.1 request of a stream that follows
// channels from now on (each at -1), signed in with token as an EventSource
// sends it (the token query parameter; none when empty).
func SubscribeRequest(host string, channels []string, token string) []byte {
	obj := make(map[string]int, len(channels))
	for _, c := range channels {
		obj[c] = -1
	}
	js, _ := json.Marshal(obj) // a map of strings to ints always encodes
	q := url.Values{"channels": {string(js)}}
	if token != "" {
		q.Set("token", token)
	}
	var b strings.Builder
	b.WriteString("GET /presence/subscribe?")
	b.WriteString(q.Encode())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(host)
	b.WriteString("\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: sse-swarm\r\n\r\n")
	return []byte(b.String())
}
