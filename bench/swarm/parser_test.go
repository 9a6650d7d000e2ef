package swarm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"
)

const okHead = "HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\nContent-Type: text/event-stream\r\n" +
	"X-Accel-Buffering: no\r\nDate: Sun, 06 Dec 2026 03:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"

func enterFrame(channel, user string) string {
	return "id: AZ8dP5QenWfbAYD045DN2bAGAQ\nevent: message\ndata: {\"channel\":\"" + channel +
		"\",\"message_id\":1795942337248512,\"data\":{\"entering_users\":[{\"id\":\"" + user +
		"\",\"username\":\"ann\",\"name\":\"Ann\",\"avatar_template\":\"\"}]}}\n\n"
}

// chunked encodes writes as net/http does: one chunk per flushed write.
func chunked(writes ...string) string {
	var b bytes.Buffer
	w := httputil.NewChunkedWriter(&b)
	for _, s := range writes {
		_, _ = w.Write([]byte(s))
	}
	_ = w.Close()
	b.WriteString("\r\n") // the empty trailer
	return b.String()
}

// nodeStream is a stream as the node writes it, and the events it holds
// for NewMatcher("/demo/s/all", "u1").
func nodeStream() (string, []Event) {
	body := chunked(
		": connected\n\n",
		enterFrame("/demo/s/all", "u1")+enterFrame("/demo/s/all", "u2"), // two frames in one write
		": keepalive\n\n",
		"id: AZ8dP5QenWfbAQEB\nevent: unavailable\ndata: {\"channel\":\"/demo/s/7\"}\n\n",
		enterFrame("/demo/s/7", "u1"),    // the user, in another channel
		enterFrame("/demo/s/all", "u10"), // a user whose id starts like u1's
		"id: x\nevent: message\ndata: {\"channel\":\"/demo/s/all\",\"message_id\":2,\"data\":{\"leaving_user_ids\":[\"u1\"]}}\n\n",
		"id: y\r\nevent: resync\r\ndata: {\"channel\":\"/demo/s/all\"}\r\n\r\n",                   // CRLF line ends are SSE too
		"data: {\"channel\":\"/demo/s/all\",\"data\":{\"entering_users\":[{\"id\":\"u1\"}]}}\n\n", // no event line: a message
		"event: custom\ndata: x\n\n",
	)
	return okHead + body, []Event{
		EventConnected, EventEnter, EventMessage, EventKeepalive, EventUnavailable, EventMessage,
		EventMessage, EventMessage, EventResync, EventEnter, EventOther,
	}
}

// feedSplit feeds s in the parts that cut gives and returns the events and
// the error that ended it.
func feedSplit(s string, m *Matcher, cuts []int) ([]Event, error) {
	var p Parser
	var got []Event
	emit := func(e Event) { got = append(got, e) }
	prev := 0
	for _, c := range append(cuts, len(s)) {
		c = min(c, len(s))
		if err := p.Feed([]byte(s[prev:c]), m, emit); err != nil {
			return got, err
		}
		prev = c
	}
	return got, p.Flush()
}

func TestParserFindsTheEventsHoweverTheBytesArrive(t *testing.T) {
	stream, want := nodeStream()
	m := NewMatcher("/demo/s/all", "u1")
	splits := map[string][]int{"whole": nil}
	var every []int
	for i := 1; i < len(stream); i++ {
		every = append(every, i)
	}
	splits["byte by byte"] = every
	for seed := range 20 {
		r := rand.New(rand.NewPCG(uint64(seed), 1))
		var cuts []int
		for c := r.IntN(40) + 1; c < len(stream); c += r.IntN(40) + 1 {
			cuts = append(cuts, c)
		}
		splits[fmt.Sprintf("random split %d", seed)] = cuts
	}
	for name, cuts := range splits {
		got, err := feedSplit(stream, m, cuts)
		if !errors.Is(err, ErrEnded) {
			t.Errorf("%s: ended with %v, want ErrEnded", name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: events %v, want %v", name, got, want)
		}
	}
}

func TestParserWithoutMatcherSeesNoEnter(t *testing.T) {
	stream, want := nodeStream()
	got, _ := feedSplit(stream, nil, nil)
	for i, e := range want {
		if e == EventEnter {
			want[i] = EventMessage
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestParserReportsErrorAnswers(t *testing.T) {
	cases := map[string]struct {
		stream string
		want   StatusError
	}{
		"with length": {
			"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 28\r\n\r\n{\"errors\":[\"rate limited\"]}\n",
			StatusError{429, `{"errors":["rate limited"]}`},
		},
		"empty body":       {"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", StatusError{503, ""}},
		"cut by the close": {"HTTP/1.0 400 Bad Request\r\n\r\n{\"errors\":", StatusError{400, `{"errors":`}},
		"long body":        {"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("x", 1000), StatusError{500, strings.Repeat("x", maxErrorBody)}},
	}
	for name, c := range cases {
		for _, cuts := range [][]int{nil, {1, 10, 30, 40, 60, 70, 80, 90}} {
			_, err := feedSplit(c.stream, nil, cuts)
			var se *StatusError
			if !errors.As(err, &se) || *se != c.want {
				t.Errorf("%s, cuts %v: err %v, want %v", name, cuts, err, &c.want)
			}
		}
	}
}

func TestParserPlainBody(t *testing.T) {
	got, err := feedSplit("HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: connected\n\n"+enterFrame("/c/x", "7"),
		NewMatcher("/c/x", "7"), []int{5, 60, 70})
	if !errors.Is(err, ErrEnded) || !slices.Equal(got, []Event{EventConnected, EventEnter}) {
		t.Errorf("events %v, err %v", got, err)
	}
}

func TestParserRejectsMalformedStreams(t *testing.T) {
	for _, s := range []string{
		"garbage\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", maxHead) + "\r\n\r\n",
	} {
		if _, err := feedSplit(s, nil, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%.40q: err %v, want ErrMalformed", s, err)
		}
	}
}

func TestPatternFindsOverlappingStarts(t *testing.T) {
	p := newPattern("abab")
	state, hit := p.feed(0, []byte("aba"))
	if hit {
		t.Fatal("hit too early")
	}
	// "abaabab": the match starts at the second a of the first part.
	if _, hit = p.feed(state, []byte("abab")); !hit {
		t.Error("pattern not found across parts")
	}
	if _, hit = p.feed(0, []byte("abaab")); hit {
		t.Error("false hit")
	}
}
