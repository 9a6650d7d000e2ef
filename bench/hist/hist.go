// Package hist is a log-bucketed latency histogram in the style of
// HdrHistogram: constant memory, O(1) recording, and quantiles whose relative
// error is below 0.4% (each power of two is split into 128 linear buckets and
// a quantile reports its bucket's midpoint).
package hist

import (
	"math"
	"math/bits"
	"time"
)

const (
	subBits  = 7
	subCount = 1 << subBits // linear buckets per power of two
	// buckets covers every non-negative int64: values below 2*subCount are
	// exact, then 128 buckets for each of the remaining 63-subBits powers.
	buckets = (64 - subBits) * subCount
)

// Histogram records durations. The zero value is ready to use. It is not safe
// for concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts [buckets]uint64
	total  uint64
	sum    float64
	min    int64
	max    int64
}

// index maps a non-negative value to its bucket.
func index(v int64) int {
	u := uint64(v)
	if u < 2*subCount {
		return int(u)
	}
	shift := bits.Len64(u) - (subBits + 1)
	return (shift+1)*subCount + int(u>>uint(shift)) - subCount
}

// bounds returns the lowest value of bucket i and the bucket's width.
func bounds(i int) (lo, width int64) {
	if i < 2*subCount {
		return int64(i), 1
	}
	shift := i/subCount - 1
	mantissa := int64(i%subCount + subCount)
	return mantissa << uint(shift), 1 << uint(shift)
}

// Record adds one observation; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[index(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.total }

// Min is the smallest observation, zero when empty.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest observation, zero when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average observation, zero when empty.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile returns the value below which a fraction q (0..1) of the
// observations fall: the midpoint of the bucket holding the rank-ceil(q*n)
// observation, clamped to the observed minimum and maximum. Zero when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := max(uint64(math.Ceil(q*float64(h.total))), 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, width := bounds(i)
			v := lo + (width-1)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
