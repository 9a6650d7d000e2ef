package webhookload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Driver makes users enter and leave channels through the nodes: user u
// is alone with one client in channel u mod Channels, and each of its
// operations changes whether it is present, so each publishes exactly one
// message.
type Driver struct {
	URLs     []string
	Channels []string
	Tokens   []string // one per user
	Client   *http.Client

	present []bool       // by user, under its lock
	locks   []sync.Mutex // one operation of a user at a time
	next    atomic.Int64
	OK      atomic.Int64 // operations answered as applied
	Failed  atomic.Int64 // operations that failed (the user's state is then unknown)
}

// channel returns user u's channel.
func (d *Driver) channel(u int) string { return d.Channels[u%len(d.Channels)] }

// Run performs rate operations a second until ctx ends, with workers
// requests in flight at most, the users in turn. It returns the
// operations started.
func (d *Driver) Run(ctx context.Context, rate float64, workers int) int64 {
	d.init()
	ops := make(chan int, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range ops {
				d.toggle(ctx, u)
			}
		}()
	}
	start := time.Now()
	var started int64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
		}
		due := int64(rate * time.Since(start).Seconds())
		for ; started < due; started++ {
			u := int(d.next.Add(1)-1) % len(d.Tokens)
			select {
			case ops <- u:
			case <-ctx.Done():
				break loop
			}
		}
	}
	close(ops)
	wg.Wait()
	return started
}

func (d *Driver) init() {
	if d.present == nil {
		d.present = make([]bool, len(d.Tokens))
		d.locks = make([]sync.Mutex, len(d.Tokens))
	}
}

// LeaveAll makes every present user leave.
func (d *Driver) LeaveAll(ctx context.Context) {
	d.init()
	for u := range d.present {
		d.locks[u].Lock()
		present := d.present[u]
		d.locks[u].Unlock()
		if present {
			d.toggle(ctx, u)
		}
	}
}

// Present counts the users present now.
func (d *Driver) Present() int {
	d.init()
	n := 0
	for u := range d.present {
		d.locks[u].Lock()
		if d.present[u] {
			n++
		}
		d.locks[u].Unlock()
	}
	return n
}

// toggle enters user u when absent, else makes it leave.
func (d *Driver) toggle(ctx context.Context, u int) {
	d.locks[u].Lock()
	defer d.locks[u].Unlock()
	ch := d.channel(u)
	body := map[string]any{"client_id": "load"}
	if d.present[u] {
		body["leave_channels"] = []string{ch}
	} else {
		body["present_channels"] = []string{ch}
	}
	enc, _ := json.Marshal(body) // strings only
	base := d.URLs[u%len(d.URLs)]
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/presence/update", bytes.NewReader(enc))
	if err != nil {
		d.Failed.Add(1)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+d.Tokens[u])
	resp, err := d.Client.Do(req)
	if err != nil {
		d.Failed.Add(1)
		return
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	var answer map[string]bool
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &answer) != nil || !d.present[u] && !answer[ch] {
		d.Failed.Add(1)
		return
	}
	d.present[u] = !d.present[u]
	d.OK.Add(1)
}

// LastIDs reads every channel's last message id from base.
func LastIDs(ctx context.Context, client *http.Client, base string, channels []string) (map[string]int64, error) {
	out := make(map[string]int64, len(channels))
	for start := 0; start < len(channels); start += 50 {
		batch := channels[start:min(start+50, len(channels))]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/presence/get?"+url.Values{"channels[]": batch}.Encode(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		var got map[string]*struct {
			LastMessageID int64 `json:"last_message_id"`
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			return nil, fmt.Errorf("GET %s/presence/get: %d %v", base, resp.StatusCode, err)
		}
		for _, ch := range batch {
			if got[ch] != nil {
				out[ch] = got[ch].LastMessageID
			}
		}
	}
	return out, nil
}

// Sample is what a node's /metrics said at one moment.
type Sample struct {
	At        time.Duration // since the run began
	RSS       float64       // process_resident_memory_bytes
	HeapInuse float64       // go_memstats_heap_inuse_bytes
	Queued    float64       // presence_webhook_queued_events, every prefix
	Oldest    float64       // presence_webhook_oldest_undelivered_seconds, the largest
}

// Scrape reads a Sample from base's /metrics.
func Scrape(ctx context.Context, client *http.Client, base string) (Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return Sample{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Sample{}, err
	}
	defer resp.Body.Close()
	return ParseSample(resp.Body)
}

// ParseSample reads a Sample from Prometheus text.
func ParseSample(r io.Reader) (Sample, error) {
	var s Sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, _, _ := strings.Cut(line[:i], "{")
		switch name {
		case "process_resident_memory_bytes":
			s.RSS = v
		case "go_memstats_heap_inuse_bytes":
			s.HeapInuse = v
		case "presence_webhook_queued_events":
			s.Queued += v
		case "presence_webhook_oldest_undelivered_seconds":
			s.Oldest = max(s.Oldest, v)
		}
	}
	return s, sc.Err()
}
