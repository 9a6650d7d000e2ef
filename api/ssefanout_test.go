package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fanoutChannel is the channel every stream of BenchmarkSSEFanout follows.
const fanoutChannel = "/demo/fan"

// fanoutNode is the handler over a real engine and hub, served over
// loopback TCP, with raw-socket SSE readers that only count frames, so the
// benchmark measures the server's side of a fan-out.
type fanoutNode struct {
	frameCounter
	h      http.Handler
	srv    *httptest.Server
	tokens []string
}

// frameCounter counts the frames that raw-socket readers of SSE streams
// receive.
type frameCounter struct {
	// left counts the frames still expected in the current operation; the
	// reader that takes it to zero signals done.
	left atomic.Int64
	done chan struct{}
	// counts records how many frames each reader saw, for failure messages.
	counts []atomic.Int64
}

func newFrameCounter(streams int) frameCounter {
	return frameCounter{done: make(chan struct{}, 1), counts: make([]atomic.Int64, streams)}
}

func newFanoutNode(b *testing.B, users, streams int) *fanoutNode {
	b.Helper()
	engine, reg := newDemoEngine(b)
	h, err := New(Config{
		Service: engine, Prefixes: newFakePrefixes(), Cluster: &fakeCluster{ready: true},
		JWTSecrets: [][]byte{[]byte(testSecret)}, AdminToken: testAdminToken, Registry: reg, RateBurst: 1 << 30,
		KeepAlive: time.Hour, // the readers count every frame, comments included
		// Every reader is an anonymous client of 127.0.0.1.
		MaxStreamsPerIP: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	n := &fanoutNode{frameCounter: newFrameCounter(streams), h: h, srv: httptest.NewServer(h)}
	b.Cleanup(func() { // before the engine's close, registered earlier
		h.Close() // the pooled streams, which the server no longer tracks
		n.srv.CloseClientConnections()
		n.srv.Close()
	})
	exp := time.Now().Add(time.Hour).Unix()
	for i := range users {
		claims := jwt.MapClaims{"sub": fmt.Sprint("u", i), "username": fmt.Sprint("user", i), "name": "Some Body",
			"avatar_template": "/load/1/{size}.png", "exp": exp}
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
		if err != nil {
			b.Fatal(err)
		}
		n.tokens = append(n.tokens, tok)
	}
	return n
}

// open connects n streams from the channel's last message id, so that
// every message published after open returns reaches every stream, whether
// its subscription is still catching up or already live.
func (n *fanoutNode) open(b *testing.B, streams int) {
	b.Helper()
	from := n.lastID(b)
	q := url.Values{"channels": {fmt.Sprintf(`{%q:%d}`, fanoutChannel, from)}}
	req := "GET /presence/subscribe?" + q.Encode() + " HTTP/1.1\r\nHost: bench\r\n\r\n"
	n.left.Store(int64(streams)) // the ": connected" frames
	for i := range streams {
		c, err := net.Dial("tcp", n.srv.Listener.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write([]byte(req)); err != nil {
			b.Fatal(err)
		}
		go n.read(c, i)
	}
	n.wait(b)
}

// lastID makes the channel exist (a setup user enters it) and returns its
// last message id.
func (n *fanoutNode) lastID(b *testing.B) int64 {
	b.Helper()
	n.update(b, len(n.tokens)-1, "present_channels")
	r := httptest.NewRequest(http.MethodGet, "/presence/get?channels="+url.QueryEscape(fanoutChannel), nil)
	w := httptest.NewRecorder()
	n.h.ServeHTTP(w, r)
	var got map[string]struct {
		LastMessageID int64 `json:"last_message_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != http.StatusOK {
		b.Fatalf("get: status %d, %q: %v", w.Code, w.Body.String(), err)
	}
	return got[fanoutChannel].LastMessageID
}

// update sends user u's client's update with channel in field.
func (n *fanoutNode) update(b *testing.B, u int, field string) {
	body := fmt.Sprintf(`{"client_id":"c%d",%q:[%q]}`, u, field, fanoutChannel)
	r := httptest.NewRequest(http.MethodPost, "/presence/update", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+n.tokens[u])
	r.Header.Set("Content-Type", "application/json")
	w := &discardWriter{h: http.Header{}}
	n.h.ServeHTTP(w, r)
	if w.code != 0 && w.code != http.StatusOK {
		b.Fatalf("update: status %d", w.code)
	}
}

// read counts the frames (blank-line terminated) of one raw stream.
func (n *frameCounter) read(c net.Conn, i int) {
	defer c.Close()
	buf := make([]byte, 4096)
	prevNL := false
	for {
		k, err := c.Read(buf)
		if err != nil {
			return
		}
		p := buf[:k]
		frames := int64(bytes.Count(p, []byte("\n\n")))
		if prevNL && p[0] == '\n' {
			frames++
		}
		prevNL = p[k-1] == '\n'
		n.counts[i].Add(frames)
		if frames > 0 && n.left.Add(-frames) == 0 {
			n.done <- struct{}{}
		}
	}
}

func (n *frameCounter) wait(b *testing.B) {
	b.Helper()
	select {
	case <-n.done:
	case <-time.After(time.Minute):
		hist := map[int64]int{}
		for i := range n.counts {
			hist[n.counts[i].Load()]++
		}
		b.Logf("frames per stream: %v", hist)
		b.Fatalf("frames still missing: %d", n.left.Load())
	}
}

// round publishes one message per burst user (enters when op is even,
// leaves when it is odd) and waits until every stream read them all.
func (n *fanoutNode) round(b *testing.B, op, streams, burst int) {
	n.left.Store(int64(burst * streams))
	field := "present_channels"
	if op%2 == 1 {
		field = "leave_channels"
	}
	for u := range burst {
		n.update(b, u, field)
	}
	n.wait(b)
}

// processCPU returns the CPU time (user and system) of this process: the
// server and the readers.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// skipWithoutFiles skips b when the process may not open n files.
func skipWithoutFiles(b *testing.B, n int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n) {
		b.Skipf("needs %d open files, the limit is %d (ulimit -n)", n, lim.Cur)
	}
}

// BenchmarkSSEFanout measures one operation of target 4a in-process: every
// op publishes burst messages (enters and leaves of burst users) to one
// channel followed by streams SSE streams over loopback TCP, and ends when
// every stream read every frame. ns/op divided by streams*burst is the cost
// of one frame reaching one subscriber.
func BenchmarkSSEFanout(b *testing.B) {
	for _, c := range []struct{ streams, burst int }{{1000, 1}, {4000, 1}, {1000, 8}} {
		b.Run(fmt.Sprintf("streams=%d/burst=%d", c.streams, c.burst), func(b *testing.B) {
			skipWithoutFiles(b, 2*c.streams+256)        // both ends of every stream are here
			n := newFanoutNode(b, c.burst+1, c.streams) // and the setup user
			n.open(b, c.streams)
			measureFrames(b, c.streams*c.burst, func(i int) { n.round(b, i, c.streams, c.burst) })
		})
	}
}

// measureFrames times op, which delivers frames frames per call, and
// reports the wall and CPU time per frame.
func measureFrames(b *testing.B, frames int, op func(i int)) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; b.Loop(); i++ {
		op(i)
	}
	all := float64(b.N * frames)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/all, "ns/frame")
	// CPU time does not count what the neighbours on a shared machine
	// take, so it compares runs better than wall time.
	b.ReportMetric(float64(processCPU()-cpu)/all, "cpu-ns/frame")
}

// BenchmarkRawFanout is BenchmarkSSEFanout's baseline: the same readers
// and frame size, but the server is bare TCP with one goroutine per
// connection woken through a channel, as the hub wakes streams; no HTTP, no
// hub, no encoding. What it costs per frame is the floor that system calls
// and goroutine wake-ups set on this machine.
func BenchmarkRawFanout(b *testing.B) {
	for _, streams := range []int{1000, 4000} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			skipWithoutFiles(b, 2*streams+256)
			r := newRawFanout(b, streams)
			measureFrames(b, streams, func(int) { r.round(b) })
		})
	}
}

// rawFrame has the size of the frame of a one-user enter in
// BenchmarkSSEFanout.
var rawFrame = []byte("id: AQAAAAAAAAAAAAAAAAAAAA\nevent: message\ndata: " + strings.Repeat("x", 180) + "\n\n")

// rawFanout is a bare TCP server whose connections each have a writer
// goroutine.
type rawFanout struct {
	frameCounter
	writers []chan []byte
}

func newRawFanout(b *testing.B, streams int) *rawFanout {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	r := &rawFanout{frameCounter: newFrameCounter(streams)}
	b.Cleanup(func() {
		for _, w := range r.writers {
			close(w)
		}
	})
	r.left.Store(int64(streams)) // the ": connected" frames
	for i := range streams {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		go r.read(c, i)
		sc, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		w := make(chan []byte, 16)
		r.writers = append(r.writers, w)
		go func() {
			defer sc.Close()
			for f := range w {
				if _, err := sc.Write(f); err != nil {
					return
				}
			}
		}()
		w <- connectedFrame
	}
	ln.Close()
	r.wait(b)
	return r
}

// round sends one frame to every connection and waits until all are read.
func (r *rawFanout) round(b *testing.B) {
	r.left.Store(int64(len(r.writers)))
	for _, w := range r.writers {
		w <- rawFrame
	}
	r.wait(b)
}
