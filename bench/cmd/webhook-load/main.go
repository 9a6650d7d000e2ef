// Command webhook-load is the load scenario of webhooks: users enter and
// leave channels of a prefix whose webhook points at a receiver this
// command runs, at a given rate, while the receiver goes down for a while
// in the middle. At the end it checks that every event arrived (each
// channel's ids without a gap up to its last message) and reports the
// deliveries, their delay and the nodes' memory and webhook queues over
// the run. See docs/benchmarks.md, "Webhooks under load".
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/presencehq/presence/bench/token"
	"github.com/presencehq/presence/bench/webhookload"
)

// options are the command-line flags.
type options struct {
	urls       []string
	adminToken string
	jwtSecret  string
	prefix     string
	channels   int
	users      int
	rate       float64
	duration   time.Duration
	outage     time.Duration
	outageAt   time.Duration
	outageMode string
	listen     string
	secret     string
	drain      time.Duration
	workers    int
	json       bool
	keep       bool
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("webhook-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urls string
	fs.StringVar(&urls, "urls", "http://127.0.0.1:8080", "comma-separated node base URLs; users are spread over them")
	fs.StringVar(&o.adminToken, "admin-token", "dev-admin-token", "admin token of the nodes (the default is --dev's)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "dev-jwt-secret-not-for-production", "HS256 secret of user tokens (the default is --dev's)")
	fs.StringVar(&o.prefix, "prefix", "whload", "prefix whose document this command stores, with the webhook")
	fs.IntVar(&o.channels, "channels", 100, "channels the users are spread over")
	fs.IntVar(&o.users, "users", 2000, "users; each enters or leaves every users/rate seconds (the node allows 2 updates/s per user)")
	fs.Float64Var(&o.rate, "rate", 1000, "enters and leaves per second, in all")
	fs.DurationVar(&o.duration, "duration", time.Minute, "length of the run")
	fs.DurationVar(&o.outage, "outage", 5*time.Second, "how long the receiver is down")
	fs.DurationVar(&o.outageAt, "outage-at", 0, "when the outage begins; 0: in the middle of the run")
	fs.StringVar(&o.outageMode, "outage-mode", "refuse", "refuse (the port closed: connections refused) or 503 (every request answered 503)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "address of the receiver; the nodes must reach it")
	fs.StringVar(&o.secret, "secret", "webhook-load-secret", "the webhook's secret")
	fs.DurationVar(&o.drain, "drain", time.Minute, "longest wait, after the last operation, for the events still queued")
	fs.IntVar(&o.workers, "workers", 64, "requests in flight at most")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.keep, "keep-prefix", false, "keep the prefix document at the end")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			o.urls = append(o.urls, u)
		}
	}
	switch {
	case len(o.urls) == 0:
		return nil, errors.New("--urls names no node")
	case o.channels < 1 || o.users < 1 || o.rate <= 0 || o.workers < 1:
		return nil, errors.New("--channels, --users, --rate and --workers must be positive")
	case o.rate/float64(o.users) > 2:
		return nil, fmt.Errorf("--rate %v over %d users is more than the 2 updates/s a user may make", o.rate, o.users)
	case o.outageMode != "refuse" && o.outageMode != "503":
		return nil, fmt.Errorf("--outage-mode %q: use refuse or 503", o.outageMode)
	case o.outage < 0 || o.outage >= o.duration:
		return nil, errors.New("--outage must be shorter than --duration")
	}
	if o.outageAt == 0 {
		o.outageAt = (o.duration - o.outage) / 2
	}
	return o, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "webhook-load:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := scenario(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "webhook-load:", err)
		return 1
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		rep.write(stdout)
	}
	if !rep.OK() {
		return 1
	}
	return 0
}

// report is the outcome of a run.
type report struct {
	Rate         float64              `json:"rate"`
	Duration     time.Duration        `json:"duration"`
	Outage       time.Duration        `json:"outage"`
	OutageAt     time.Duration        `json:"outage_at"`
	OutageMode   string               `json:"outage_mode"`
	Nodes        int                  `json:"nodes"`
	Operations   int64                `json:"operations_ok"`
	Failed       int64                `json:"operations_failed"`
	Achieved     float64              `json:"achieved_rate"`
	Drain        time.Duration        `json:"drain_after_last_operation"`
	Tally        webhookload.Tally    `json:"tally"`
	Before       []webhookload.Sample `json:"before"`
	Peak         []webhookload.Sample `json:"peak"` // per node: the largest of each figure over the run
	After        []webhookload.Sample `json:"after"`
	PeakQueuedAt time.Duration        `json:"peak_queued_at"`
}

// OK reports whether every event arrived, correctly signed.
func (r *report) OK() bool {
	return r.Tally.Missing == 0 && r.Tally.Behind == 0 && r.Tally.Bad == 0 && r.Tally.Distinct > 0
}

func (r *report) write(w io.Writer) {
	mb := func(b float64) string { return fmt.Sprintf("%.0f MB", b/1e6) }
	fmt.Fprintf(w, "webhook load: %.0f enters/leaves per second for %v over %d node(s); receiver down %v from %v (%s)\n",
		r.Rate, r.Duration, r.Nodes, r.Outage, r.OutageAt, r.OutageMode)
	fmt.Fprintf(w, "operations: %d applied (%.1f/s), %d failed\n", r.Operations, r.Achieved, r.Failed)
	t := r.Tally
	fmt.Fprintf(w, "events: %d distinct delivered, %d duplicates, %d missing, %d channels behind, %d resyncs, %d bad signatures\n",
		t.Distinct, t.Duplicate, t.Missing, t.Behind, t.Resyncs, t.Bad)
	fmt.Fprintf(w, "requests: %d received, %d acknowledged, %d answered 503 while failing, largest batch %d events\n",
		t.Requests, t.Accepted, t.Refused, t.MaxBatch)
	fmt.Fprintf(w, "delay from publish to arrival: p50 %v, p99 %v, max %v; the last events arrived %v after the last operation\n",
		t.LagP50.Round(time.Millisecond), t.LagP99.Round(time.Millisecond), t.LagMax.Round(time.Millisecond), r.Drain.Round(time.Millisecond))
	for i := range r.Before {
		fmt.Fprintf(w, "node %d: RSS %s before, %s at most, %s after; heap in use %s, %s, %s; webhook queue at most %.0f events (at %v), oldest undelivered at most %.1f s\n",
			i, mb(r.Before[i].RSS), mb(r.Peak[i].RSS), mb(r.After[i].RSS),
			mb(r.Before[i].HeapInuse), mb(r.Peak[i].HeapInuse), mb(r.After[i].HeapInuse),
			r.Peak[i].Queued, r.PeakQueuedAt.Round(time.Second), r.Peak[i].Oldest)
	}
	if r.OK() {
		fmt.Fprintln(w, "every event delivered")
	} else {
		fmt.Fprintln(w, "FAILED: events missing")
	}
}

// scenario runs the whole scenario.
func scenario(ctx context.Context, o *options, log io.Writer) (*report, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.workers, MaxIdleConns: 4 * o.workers}, Timeout: 15 * time.Second}
	recv, err := webhookload.StartReceiver(o.listen, o.secret, time.Now)
	if err != nil {
		return nil, err
	}
	defer recv.Close()
	runID := randomID()
	doc := fmt.Sprintf(`{"rules":[{"match":"/%s/.+","config":{"public":true}}],"webhook":{"url":%q,"secret":%q}}`,
		o.prefix, recv.URL(), o.secret)
	if err := putPrefix(ctx, client, o, doc); err != nil {
		return nil, err
	}
	if !o.keep {
		defer deletePrefix(client, o)
	}
	channels := make([]string, o.channels)
	for i := range channels {
		channels[i] = fmt.Sprintf("/%s/%s-%d", o.prefix, runID, i)
	}
	minter, err := token.NewMinter(o.jwtSecret, 24*time.Hour, time.Now)
	if err != nil {
		return nil, err
	}
	d := &webhookload.Driver{URLs: o.urls, Channels: channels, Client: client, Tokens: make([]string, o.users)}
	for u := range d.Tokens {
		id := fmt.Sprintf("%s-%d", runID, u)
		if d.Tokens[u], err = minter.Mint(token.User{ID: id, Username: "user" + id}); err != nil {
			return nil, err
		}
	}
	rep := &report{Rate: o.rate, Duration: o.duration, Outage: o.outage, OutageAt: o.outageAt, OutageMode: o.outageMode, Nodes: len(o.urls)}
	if rep.Before, err = sampleAll(ctx, client, o.urls); err != nil {
		return nil, err
	}
	began := time.Now()
	sampler := startSampler(client, o.urls, began)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	outageDone := startOutage(runCtx, recv, o, log)
	fmt.Fprintf(log, "webhook-load: %v at %.0f operations/s, receiver down %v from %v\n", o.duration, o.rate, o.outage, o.outageAt)
	d.Run(runCtx, o.rate, o.workers)
	if err := <-outageDone; err != nil {
		return nil, err
	}
	elapsed := time.Since(began)
	d.LeaveAll(ctx)
	lastOp := time.Now()
	rep.Operations, rep.Failed = d.OK.Load(), d.Failed.Load()
	rep.Achieved = float64(rep.Operations) / elapsed.Seconds()
	last, err := webhookload.LastIDs(ctx, client, o.urls[0], channels)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(o.drain)
	for !delivered(recv, last) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	rep.Drain = time.Since(lastOp)
	rep.Tally = recv.Tally(last)
	rep.Peak, rep.PeakQueuedAt = sampler.stop()
	if rep.After, err = sampleAll(ctx, client, o.urls); err != nil {
		return nil, err
	}
	return rep, nil
}

// delivered reports whether the receiver got every channel's last message.
func delivered(r *webhookload.Receiver, last map[string]int64) bool {
	for ch, id := range last {
		if r.Highest(ch) < id {
			return false
		}
	}
	return true
}

// startOutage takes the receiver down at o.outageAt for o.outage; the
// channel answers when it is back up (or the run ended first).
func startOutage(ctx context.Context, r *webhookload.Receiver, o *options, log io.Writer) <-chan error {
	done := make(chan error, 1)
	go func() {
		select {
		case <-ctx.Done():
			done <- nil
			return
		case <-time.After(o.outageAt):
		}
		fmt.Fprintf(log, "webhook-load: receiver down (%s)\n", o.outageMode)
		if o.outageMode == "503" {
			r.SetFailing(true)
		} else if err := r.Down(); err != nil {
			done <- err
			return
		}
		time.Sleep(o.outage) // the outage itself
		fmt.Fprintln(log, "webhook-load: receiver up")
		if o.outageMode == "503" {
			r.SetFailing(false)
			done <- nil
			return
		}
		done <- r.Up()
	}()
	return done
}

// sampler scrapes every node each second.
type sampler struct {
	stopCh chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	peak   []webhookload.Sample
	peakAt time.Duration
}

func startSampler(client *http.Client, urls []string, began time.Time) *sampler {
	s := &sampler{stopCh: make(chan struct{}), peak: make([]webhookload.Sample, len(urls))}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.stopCh:
				return
			case <-t.C:
			}
			for i, u := range urls {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				smp, err := webhookload.Scrape(ctx, client, u)
				cancel()
				if err != nil {
					continue
				}
				s.mu.Lock()
				p := &s.peak[i]
				if smp.Queued > p.Queued {
					s.peakAt = time.Since(began)
				}
				p.RSS, p.HeapInuse = max(p.RSS, smp.RSS), max(p.HeapInuse, smp.HeapInuse)
				p.Queued, p.Oldest = max(p.Queued, smp.Queued), max(p.Oldest, smp.Oldest)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *sampler) stop() ([]webhookload.Sample, time.Duration) {
	close(s.stopCh)
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.peakAt
}

func sampleAll(ctx context.Context, client *http.Client, urls []string) ([]webhookload.Sample, error) {
	out := make([]webhookload.Sample, len(urls))
	for i, u := range urls {
		s, err := webhookload.Scrape(ctx, client, u)
		if err != nil {
			return nil, fmt.Errorf("GET %s/metrics: %w", u, err)
		}
		out[i] = s
	}
	return out, nil
}

// putPrefix stores the document and waits until every node serves it.
func putPrefix(ctx context.Context, client *http.Client, o *options, doc string) error {
	if status, body, err := admin(ctx, client, o, o.urls[0], http.MethodPut, doc); err != nil || status != http.StatusOK {
		return fmt.Errorf("PUT prefix %s: %d %s %v", o.prefix, status, body, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, u := range o.urls {
		for {
			status, _, err := admin(ctx, client, o, u, http.MethodGet, "")
			if err == nil && status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s does not serve prefix %s: %d %v", u, o.prefix, status, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func deletePrefix(client *http.Client, o *options) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, _ = admin(ctx, client, o, o.urls[0], http.MethodDelete, "")
}

func admin(ctx context.Context, client *http.Client, o *options, base, method, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+"/admin/prefixes/"+o.prefix, bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+o.adminToken)
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, data, err
}

func randomID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "wl" + hex.EncodeToString(b[:])
}
