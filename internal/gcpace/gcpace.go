// Package gcpace keeps the garbage collector from running many times a
// second while the heap is small and allocated fast.
//
// Go starts a collection once the heap has grown by GOGC percent (100 by
// default) of what the last collection found live. A node whose live heap
// is small, tens of MB for the presence and tokens of tens of thousands of
// users, while it allocates fast (net/http parses each heartbeat into about
// 3 KB), then collects twice a second; on a 2-core machine each mark phase
// takes a quarter of the CPU for 60 to 120 ms, and the heartbeats answered
// meanwhile make the tail of the latency (docs/benchmarks.md). A Pacer
// raises GOGC so that the heap may grow by what the node allocates in
// Period, at most MaxHeadroom bytes, between two collections. It never
// goes below GOGC's own value: a node whose live heap is large (100,000
// streams, about 350 MB) or that allocates little (idle streams) keeps
// Go's pacing, and its memory, as they are.
package gcpace

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/presencehq/presence/clock"
)

// Defaults of Config's zero fields.
const (
	// DefaultMaxHeadroom bounds the garbage a paced heap may hold: about
	// two seconds of 40,000 heartbeats a second.
	DefaultMaxHeadroom = 256 << 20
	// DefaultPeriod is how often, at most, a paced collector runs: at
	// 30,000 heartbeats a second GOGC=200 (a collection every 1.2 s)
	// left the p99 at 1.8x the bare handler's, GOGC=400 (every 2.5 s) at
	// 1.5x (docs/benchmarks.md).
	DefaultPeriod = 4 * time.Second
	// DefaultInterval is how often the allocation rate and the live heap
	// are looked at.
	DefaultInterval = time.Second
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; the runtime
// scales it with GOGC, so Percent never lets it exceed the headroom.
const heapMinimum = 4 << 20

// returnEvery spaces the returns of memory: each is a full collection.
const returnEvery = time.Minute

// change is the least relative change of GOGC worth setting: the live heap
// moves a little with every collection.
const change = 0.05

// ErrConfig is wrapped by Config.Validate's errors.
var ErrConfig = errors.New("gcpace: invalid configuration")

// Runtime is the garbage collector a Pacer drives.
type Runtime interface {
	// LiveHeap returns the bytes the last collection found live; 0 before
	// the first.
	LiveHeap() uint64
	// Allocated returns the bytes allocated since the process started.
	Allocated() uint64
	// GCPercent returns GOGC; negative when collection is off.
	GCPercent() int
	// SetGCPercent sets GOGC.
	SetGCPercent(percent int)
	// ReturnMemory collects and returns the free memory to the system.
	ReturnMemory()
}

// Config configures a Pacer. The zero value is valid: the defaults, on
// this process's runtime.
type Config struct {
	// MaxHeadroom bounds the growth of the heap between two collections,
	// in bytes; 0 means DefaultMaxHeadroom.
	MaxHeadroom int64
	// Period is how often, at most, the collector runs while the node
	// allocates fast; 0 means DefaultPeriod.
	Period time.Duration
	// Interval is how often the live heap is read; 0 means
	// DefaultInterval.
	Interval time.Duration
	// Clock drives the interval; nil means the real clock.
	Clock clock.Clock
	// Logger records the changes of GOGC at debug level; nil discards.
	Logger *slog.Logger
	// Runtime is the collector to pace; nil means this process's.
	Runtime Runtime
}

// Validate reports a negative field.
func (c Config) Validate() error {
	if c.MaxHeadroom < 0 || c.Period < 0 || c.Interval < 0 {
		return fmt.Errorf("%w: negative max headroom %d, period %v or interval %v", ErrConfig, c.MaxHeadroom, c.Period, c.Interval)
	}
	return nil
}

// Pacer sets GOGC from the live heap; see the package comment.
type Pacer struct {
	maxHeadroom uint64
	period      time.Duration
	interval    time.Duration
	clk         clock.Clock
	log         *slog.Logger
	rt          Runtime
}

// New returns a Pacer; Run starts it.
func New(cfg Config) (*Pacer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pacer{
		maxHeadroom: uint64(cmp.Or(cfg.MaxHeadroom, DefaultMaxHeadroom)),
		period:      cmp.Or(cfg.Period, DefaultPeriod),
		interval:    cmp.Or(cfg.Interval, DefaultInterval),
		clk:         cfg.Clock,
		log:         cfg.Logger,
		rt:          cfg.Runtime,
	}
	if p.clk == nil {
		p.clk = clock.Real{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.rt == nil {
		p.rt = processRuntime{}
	}
	return p, nil
}

// Run paces the collector every interval until ctx ends, then gives GOGC
// back its value from before. With collection off (GOGC=off) it returns
// at once.
func (p *Pacer) Run(ctx context.Context) {
	base := p.rt.GCPercent()
	if base < 0 {
		return
	}
	defer p.rt.SetGCPercent(base)
	t := p.clk.NewTicker(p.interval)
	defer t.Stop()
	current, allocated := base, p.rt.Allocated()
	var returned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		now := p.rt.Allocated()
		// Bytes allocated in one period at the rate of the last interval.
		garbage := uint64(float64(now-allocated) * float64(p.period) / float64(p.interval))
		allocated = now
		live := p.rt.LiveHeap()
		if live == 0 {
			continue
		}
		next := Percent(live, min(garbage, p.maxHeadroom), base)
		if math.Abs(float64(next-current)) < change*float64(current) {
			continue
		}
		p.rt.SetGCPercent(next)
		p.log.Debug("GOGC paced", "live_heap", live, "garbage_per_period", garbage, "gogc", next, "previous", current)
		if next == base && current > base && p.clk.Now().Sub(returned) >= returnEvery {
			// The node stopped allocating fast: the garbage its pace let
			// the heap hold would otherwise stay resident for minutes.
			returned = p.clk.Now()
			p.rt.ReturnMemory()
		}
		current = next
	}
}

// Percent returns the GOGC at which a live heap of live bytes may grow by
// headroom bytes before the next collection, never below base. It is at
// most what keeps the runtime's minimum heap goal, which GOGC scales,
// within the headroom.
func Percent(live, headroom uint64, base int) int {
	live = max(live, 1)
	p := (headroom*100 + live - 1) / live
	p = min(p, headroom*100/heapMinimum)
	return max(base, int(min(p, math.MaxInt32)))
}

// processRuntime is this process's collector.
type processRuntime struct{}

func (processRuntime) LiveHeap() uint64 { return readUint64("/gc/heap/live:bytes") }

func (processRuntime) Allocated() uint64 { return readUint64("/gc/heap/allocs:bytes") }

// GCPercent reads GOGC; the metric holds -1 (off) as a uint64.
func (processRuntime) GCPercent() int { return int(int64(readUint64("/gc/gogc:percent"))) }

func (processRuntime) SetGCPercent(percent int) { debug.SetGCPercent(percent) }

func (processRuntime) ReturnMemory() { debug.FreeOSMemory() }

// readUint64 reads one runtime metric.
func readUint64(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
