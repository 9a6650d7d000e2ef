package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

// openSub opens a stream on the fake service and returns it with its fake
// subscription once the handler subscribed.
func openSub(t *testing.T, e *env, srv *streamServer, i int, target string, headers map[string]string) (*stream, *fakeSub, map[string]int64) {
	t.Helper()
	st := srv.open(target, headers)
	if f := st.next(); f != ": connected\n\n" {
		t.Fatalf("first frame %q", f)
	}
	sub, from, _ := e.svc.subscription(i)
	if sub == nil {
		t.Fatal("no subscription")
	}
	return st, sub, from
}

func TestSSEHeadersAndEventEncoding(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	st, sub, from := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":3,"/a/y":-1,"/a/z":0}`), nil)
	if want := map[string]int64{"/a/x": 3, "/a/y": -1, "/a/z": 0}; !reflect.DeepEqual(from, want) {
		t.Fatalf("from %v, want %v", from, want)
	}
	h := st.resp.Header
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("headers %v", h)
	}

	cur := newCursor(from)
	audience := &presence.Config{Public: true}
	sam := presence.UserInfo{ID: "7", Username: "sam", Name: "Sam", AvatarTemplate: "/t/{size}.png"}
	steps := []struct {
		ev   presence.Event
		want string
		move func()
	}{
		{
			ev:   presence.Event{Kind: presence.EventMessage, Channel: "/a/x", LastID: 4, Message: &presence.Message{Channel: "/a/x", ID: 4, EnteringUsers: []presence.UserInfo{sam}, Audience: audience}},
			want: `event: message` + "\n" + `data: {"channel":"/a/x","message_id":4,"data":{"entering_users":[{"id":"7","username":"sam","name":"Sam","avatar_template":"/t/{size}.png"}]}}`,
			move: func() { cur.set("/a/x", 4) },
		},
		{
			ev:   presence.Event{Kind: presence.EventMessage, Channel: "/a/x", LastID: 5, Message: &presence.Message{Channel: "/a/x", ID: 5, LeavingUserIDs: []string{"7", "8"}, Audience: audience}},
			want: `event: message` + "\n" + `data: {"channel":"/a/x","message_id":5,"data":{"leaving_user_ids":["7","8"]}}`,
			move: func() { cur.set("/a/x", 5) },
		},
		{
			ev:   presence.Event{Kind: presence.EventMessage, Channel: "/a/y", LastID: 1, Message: &presence.Message{Channel: "/a/y", ID: 1, CountOnly: true, CountDelta: -2, Audience: audience}},
			want: `event: message` + "\n" + `data: {"channel":"/a/y","message_id":1,"data":{"count_delta":-2}}`,
			move: func() { cur.set("/a/y", 1) },
		},
		{
			ev:   presence.Event{Kind: presence.EventResync, Channel: "/a/z", LastID: 90},
			want: `event: resync` + "\n" + `data: {"channel":"/a/z"}`,
			move: func() { cur.set("/a/z", 90) },
		},
		{
			ev:   presence.Event{Kind: presence.EventUnavailable, Channel: "/a/y"},
			want: `event: unavailable` + "\n" + `data: {"channel":"/a/y"}`,
			move: func() {},
		},
	}
	for i, step := range steps {
		sub.events <- step.ev
		step.move()
		want := "id: " + cur.encode() + "\n" + step.want + "\n\n"
		if got := st.next(); got != want {
			t.Fatalf("event %d:\n got %q\nwant %q", i, got, want)
		}
	}
}

func TestSSEKeepaliveDrivenByClock(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	st, sub, _ := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":-1}`), nil)

	// 24 s: no keepalive yet, so the next frame is the event sent after it.
	e.clock.Advance(24 * time.Second)
	sub.events <- presence.Event{Kind: presence.EventUnavailable, Channel: "/a/x"}
	if f := st.next(); f == ": keepalive\n\n" {
		t.Fatal("keepalive before 25 s")
	}
	e.clock.Advance(time.Second)
	if f := st.next(); f != ": keepalive\n\n" {
		t.Fatalf("frame %q, want a keepalive at 25 s", f)
	}
	e.clock.Advance(25 * time.Second)
	if f := st.next(); f != ": keepalive\n\n" {
		t.Fatalf("frame %q, want a keepalive at 50 s", f)
	}
}

func TestSSELastEventIDResumesEveryChannel(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	query := subscribeQuery(`{"/a/x":3,"/a/y":-1,"/a/z":7}`)
	st, sub, _ := openSub(t, e, srv, 0, query, nil)
	sub.events <- presence.Event{Kind: presence.EventMessage, Channel: "/a/x", LastID: 4,
		Message: &presence.Message{Channel: "/a/x", ID: 4, LeavingUserIDs: []string{"1"}}}
	sub.events <- presence.Event{Kind: presence.EventMessage, Channel: "/a/y", LastID: 12,
		Message: &presence.Message{Channel: "/a/y", ID: 12, LeavingUserIDs: []string{"1"}}}
	st.next()
	last := eventID(t, st.next())
	st.close()

	want := map[string]int64{"/a/x": 4, "/a/y": 12, "/a/z": 7}
	_, _, from := openSub(t, e, srv, 1, query, map[string]string{"Last-Event-ID": last})
	if !reflect.DeepEqual(from, want) {
		t.Fatalf("header resume from %v, want %v", from, want)
	}
	_, _, from = openSub(t, e, srv, 2, query+"&lastEventId="+last, nil)
	if !reflect.DeepEqual(from, want) {
		t.Fatalf("query resume from %v, want %v", from, want)
	}
	// A cursor of another channel set does not apply: the query's ids stand.
	_, _, from = openSub(t, e, srv, 3, subscribeQuery(`{"/a/x":3}`), map[string]string{"Last-Event-ID": last})
	if !reflect.DeepEqual(from, map[string]int64{"/a/x": 3}) {
		t.Fatalf("foreign cursor applied: %v", from)
	}
}

func TestSSEResyncCarriesCursor(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	query := subscribeQuery(`{"/a/x":3}`)
	st, sub, _ := openSub(t, e, srv, 0, query, nil)
	sub.events <- presence.Event{Kind: presence.EventResync, Channel: "/a/x", LastID: 1500}
	last := eventID(t, st.next())
	_, _, from := openSub(t, e, srv, 1, query, map[string]string{"Last-Event-ID": last})
	if from["/a/x"] != 1500 {
		t.Fatalf("resumed from %d, want 1500", from["/a/x"])
	}
}

func TestSSEStreamEndsWithSubscriptionOrClient(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	st, sub, _ := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":-1}`), nil)
	close(sub.events)
	if !st.ended() {
		t.Fatal("stream still open after the subscription closed")
	}
	testkit.WaitFor(t, "subscription closed", func() bool { return isClosed(sub.closed) })

	st, sub, _ = openSub(t, e, srv, 1, subscribeQuery(`{"/a/x":-1}`), nil)
	st.close()
	testkit.WaitFor(t, "subscription closed after disconnect", func() bool { return isClosed(sub.closed) })
}

func TestSSEDropsMessagesOutsideAudience(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	st, sub, _ := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":-1}`), nil)
	secret := &presence.Config{AllowedUserIDs: []string{"1"}}
	sub.events <- presence.Event{Kind: presence.EventMessage, Channel: "/a/x", LastID: 1,
		Message: &presence.Message{Channel: "/a/x", ID: 1, LeavingUserIDs: []string{"1"}, Audience: secret}}
	sub.events <- presence.Event{Kind: presence.EventUnavailable, Channel: "/a/x"}
	if f := st.next(); !strings.Contains(f, "event: unavailable") {
		t.Fatalf("frame %q: a restricted message reached an anonymous subscriber", f)
	}
}

func TestSSEServiceErrorBeforeStreaming(t *testing.T) {
	e := newEnv(t, nil)
	e.svc.err = fmt.Errorf("busy: %w", presence.ErrOverloaded)
	rec := e.do("GET", subscribeQuery(`{"/a/x":-1}`), nil)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", rec.Code)
	}
	errorsOf(t, rec)
}

func TestCursorRoundTrip(t *testing.T) {
	from := map[string]int64{"/a/1": -1, "/a/2": 0, "/b/x": 1 << 40}
	c := newCursor(from)
	ids, applies, ok := decodeCursor(c.encode(), c.names)
	if !ok || !applies {
		t.Fatalf("ok=%v applies=%v", ok, applies)
	}
	for i, name := range c.names {
		if ids[i] != from[name] {
			t.Fatalf("%s: %d, want %d", name, ids[i], from[name])
		}
	}
	for _, bad := range []string{"", "!!", "AA", "AQ", c.encode() + "gA"} {
		if _, _, ok := decodeCursor(bad, c.names); ok {
			t.Fatalf("cursor %q decoded", bad)
		}
	}
}

// eventID returns the id line of a frame.
func eventID(t *testing.T, frame string) string {
	t.Helper()
	var id string
	if _, err := fmt.Sscanf(frame, "id: %s\n", &id); err != nil {
		t.Fatalf("frame %q has no id: %v", frame, err)
	}
	return id
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Events that queue up while a stream writes reach the client as the same
// frames, in order, whether or not they were written together.
func TestSSEQueuedEventsKeepTheirFrames(t *testing.T) {
	e := newEnv(t, nil)
	srv := newStreamServer(t, e)
	st, sub, from := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":0,"/a/y":-1}`), nil)
	audience := &presence.Config{Public: true}
	cur := newCursor(from)
	var want []string
	for id := int64(1); id <= 12; id++ {
		ch := []string{"/a/x", "/a/y"}[id%2]
		sub.events <- presence.Event{Kind: presence.EventMessage, Channel: ch, LastID: id,
			Message: &presence.Message{Channel: ch, ID: id, LeavingUserIDs: []string{"u"}, Audience: audience}}
		cur.set(ch, id)
		want = append(want, fmt.Sprintf("id: %s\nevent: message\ndata: {\"channel\":%q,\"message_id\":%d,\"data\":{\"leaving_user_ids\":[\"u\"]}}\n\n",
			cur.encode(), ch, id))
	}
	for i, w := range want {
		if got := st.next(); got != w {
			t.Fatalf("frame %d:\n got %q\nwant %q", i, got, w)
		}
	}
}

// TestStreamOutlivesTheServerReadTimeout: a node's http.Server has a read
// timeout for whole requests, which streams outlive. net/http lifts the
// deadline once a request is read (a read failing on the connection would
// cancel the stream's context); this keeps it that way. The wait is for a
// socket deadline, which is wall-clock time by nature.
func TestStreamOutlivesTheServerReadTimeout(t *testing.T) {
	const readTimeout = 50 * time.Millisecond
	e := newEnv(t, nil)
	httpSrv := httptest.NewUnstartedServer(e.h)
	httpSrv.Config.ReadTimeout = readTimeout
	httpSrv.Start()
	t.Cleanup(httpSrv.Close)
	srv := &streamServer{t: t, srv: httpSrv}
	st, sub, _ := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":-1}`), nil)
	time.Sleep(4 * readTimeout)
	sub.events <- presence.Event{Kind: presence.EventUnavailable, Channel: "/a/x"}
	if f := st.next(); !strings.Contains(f, "event: unavailable") {
		t.Fatalf("frame %q", f)
	}
}
