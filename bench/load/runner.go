package load

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/bench/hist"
)

// Target executes operations against one system under test.
type Target interface {
	// Do executes ops, setting each op's Applied flags, and returns one
	// outcome per op in out (len(out) == len(ops)).
	Do(ctx context.Context, ops []*Op, out []Outcome)
	// Batch is how many operations one Do call carries (pipelining).
	Batch() int
}

// Outcome is how one operation ended: Code is an HTTP status ("200",
// "429"), or a short error class ("timeout", "refused", "redis: ...").
type Outcome struct {
	Code string
	OK   bool
}

// Source hands out operations to workers.
type Source interface {
	// Next fills op; false with done=true means the source is exhausted,
	// false with done=false that nothing could be picked just now.
	Next(rng *rand.Rand, op *Op) (ok, done bool)
	// Finish releases op after the target executed it.
	Finish(op *Op)
}

// Workload draws from the population's mix forever.
type Workload struct{ Pop *Population }

// Next implements Source.
func (w Workload) Next(rng *rand.Rand, op *Op) (bool, bool) { return w.Pop.Next(rng, op), false }

// Finish implements Source.
func (w Workload) Finish(op *Op) { w.Pop.Finish(op) }

// Warmup enters every client into all its channels once.
type Warmup struct{ Pop *Population }

// Next implements Source.
func (w Warmup) Next(_ *rand.Rand, op *Op) (bool, bool) {
	ok := w.Pop.NextWarmup(op)
	return ok, !ok
}

// Finish implements Source.
func (w Warmup) Finish(op *Op) { w.Pop.Finish(op) }

// Cleanup makes every present client leave.
type Cleanup struct{ Pop *Population }

// Next implements Source.
func (c Cleanup) Next(_ *rand.Rand, op *Op) (bool, bool) {
	ok := c.Pop.NextCleanup(op)
	return ok, !ok
}

// Finish implements Source.
func (c Cleanup) Finish(op *Op) { c.Pop.Finish(op) }

// RunConfig says how hard and how long to drive a target.
type RunConfig struct {
	// Duration of the run; a Source that runs out ends it earlier.
	Duration time.Duration
	// Rate is the offered operations per second (open loop, latency counted
	// from each operation's scheduled start). Zero: closed loop, each worker
	// starts its next operation when the previous one ends.
	Rate float64
	// Concurrency is the number of workers.
	Concurrency int
	// Seed makes the operation sequence reproducible per worker.
	Seed uint64
}

// RunResult is what one run measured.
type RunResult struct {
	Elapsed time.Duration
	// Requests counts completed operations, OK those that succeeded.
	Requests, OK uint64
	// Offered counts operations scheduled (open loop); Unsent those still
	// waiting for a worker when the run ended.
	Offered, Unsent uint64
	// Idle counts picks that found no operation to do.
	Idle     uint64
	Codes    map[string]uint64
	Latency  hist.Histogram
	ByKind   [numKinds]hist.Histogram
	Kinds    [numKinds]uint64
	Entering uint64 // operations expected to make a user enter
}

// Throughput is completed operations per second.
func (r *RunResult) Throughput() float64 { return PerSecond(r.Requests, r.Elapsed) }

// OKThroughput is successful operations per second.
func (r *RunResult) OKThroughput() float64 { return PerSecond(r.OK, r.Elapsed) }

// PerSecond is n events over d as a rate; zero for an empty interval.
func PerSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func (r *RunResult) merge(o *RunResult) {
	r.Requests += o.Requests
	r.OK += o.OK
	r.Unsent += o.Unsent
	r.Idle += o.Idle
	r.Entering += o.Entering
	for c, n := range o.Codes {
		r.Codes[c] += n
	}
	r.Latency.Merge(&o.Latency)
	for k := range r.ByKind {
		r.ByKind[k].Merge(&o.ByKind[k])
		r.Kinds[k] += o.Kinds[k]
	}
}

// worker is one goroutine's state: its operations and private tallies.
type worker struct {
	src    Source
	target Target
	rng    *rand.Rand
	ops    []*Op
	out    []Outcome
	res    RunResult
}

func newWorker(src Source, target Target, seed uint64, id int) *worker {
	w := &worker{src: src, target: target, rng: rand.New(rand.NewPCG(seed, uint64(id))),
		res: RunResult{Codes: make(map[string]uint64)}}
	for range max(target.Batch(), 1) {
		w.ops = append(w.ops, &Op{})
	}
	w.out = make([]Outcome, len(w.ops))
	return w
}

// fill picks up to n operations; done reports the source ran out.
func (w *worker) fill(n int) (got int, done bool) {
	for got < n {
		ok, exhausted := w.src.Next(w.rng, w.ops[got])
		if exhausted {
			return got, true
		}
		if !ok {
			w.res.Idle++
			break
		}
		got++
	}
	return got, false
}

// execute runs ops[:n], started at start, and records them.
func (w *worker) execute(ctx context.Context, n int, start time.Time) {
	ops, out := w.ops[:n], w.out[:n]
	w.target.Do(ctx, ops, out)
	lat := time.Since(start)
	for i, op := range ops {
		w.res.Requests++
		w.res.Codes[out[i].Code]++
		if out[i].OK {
			w.res.OK++
		}
		if op.AnyEntering() {
			w.res.Entering++
		}
		w.res.Latency.Record(lat)
		w.res.ByKind[op.Kind].Record(lat)
		w.res.Kinds[op.Kind]++
		w.src.Finish(op)
	}
}

// Run drives target with operations from src and returns the merged result.
func Run(ctx context.Context, src Source, target Target, cfg RunConfig) *RunResult {
	cfg.Concurrency = max(cfg.Concurrency, 1)
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		workers[i] = newWorker(src, target, cfg.Seed, i)
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(30*time.Second))
	defer cancel()
	var offered atomic.Uint64
	var wg sync.WaitGroup
	if cfg.Rate > 0 {
		ticks := make(chan time.Time, min(max(int(cfg.Rate), 1024), 1<<18))
		wg.Go(func() { schedule(ctx, ticks, start, deadline, cfg.Rate, &offered) })
		for _, w := range workers {
			wg.Go(func() { w.openLoop(ctx, ticks, deadline) })
		}
	} else {
		for _, w := range workers {
			wg.Go(func() { w.closedLoop(ctx, deadline) })
		}
	}
	wg.Wait()
	res := &RunResult{Elapsed: time.Since(start), Offered: offered.Load(), Codes: make(map[string]uint64)}
	for _, w := range workers {
		res.merge(&w.res)
	}
	return res
}

func (w *worker) closedLoop(ctx context.Context, deadline time.Time) {
	for ctx.Err() == nil && time.Now().Before(deadline) {
		n, done := w.fill(len(w.ops))
		if n > 0 {
			w.execute(ctx, n, time.Now())
		}
		if done {
			return
		}
		if n == 0 {
			time.Sleep(time.Millisecond) // every membership busy: back off briefly
		}
	}
}

// openLoop takes scheduled start times; a pipelined target takes whatever
// further starts are already due into the same batch.
func (w *worker) openLoop(ctx context.Context, ticks <-chan time.Time, deadline time.Time) {
	for first := range ticks {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			w.res.Unsent++
			continue
		}
		want := 1
	more:
		for want < len(w.ops) {
			select {
			case _, ok := <-ticks:
				if !ok {
					break more
				}
				want++
			default:
				break more
			}
		}
		n, _ := w.fill(want)
		w.res.Unsent += uint64(want - n)
		if n > 0 {
			w.execute(ctx, n, first)
		}
	}
}

// schedule emits the start time of every operation of an open-loop run at
// rate per second until deadline, then closes ticks.
func schedule(ctx context.Context, ticks chan<- time.Time, start, deadline time.Time, rate float64, offered *atomic.Uint64) {
	defer close(ticks)
	interval := time.Duration(float64(time.Second) / rate)
	next := start
	for next.Before(deadline) {
		now := time.Now()
		for ; !next.After(now) && next.Before(deadline); next = next.Add(interval) {
			select {
			case ticks <- next:
				offered.Add(1)
			case <-ctx.Done():
				return
			}
		}
		if wait := time.Until(next); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
	}
}
