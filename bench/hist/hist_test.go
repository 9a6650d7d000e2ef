package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestIndexBoundsRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 255, 256, 257, 511, 512, 1000, 123456789, math.MaxInt64} {
		i := index(v)
		lo, width := bounds(i)
		if v < lo || v-lo >= width {
			t.Fatalf("value %d landed in bucket %d = [%d, %d+%d)", v, i, lo, lo, width)
		}
		if i >= buckets {
			t.Fatalf("value %d: index %d out of range %d", v, i, buckets)
		}
	}
}

// exact is the rank-ceil(q*n) order statistic, the definition Quantile approximates.
func exact(sorted []int64, q float64) int64 {
	rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
	return sorted[rank-1]
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	values := make([]int64, 200_000)
	for i := range values {
		// Log-normal-ish latencies from 10µs to a few seconds.
		v := int64(math.Exp(rng.NormFloat64()*1.5 + math.Log(2e6)))
		values[i] = v
		h.Record(time.Duration(v))
	}
	slices.Sort(values)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		want := float64(exact(values, q))
		got := float64(h.Quantile(q))
		if rel := math.Abs(got-want) / want; rel > 0.01 {
			t.Errorf("q=%v: got %v want %v (relative error %.4f)", q, got, want, rel)
		}
	}
	if h.Count() != uint64(len(values)) {
		t.Errorf("count %d, want %d", h.Count(), len(values))
	}
	if h.Min() != time.Duration(values[0]) || h.Max() != time.Duration(values[len(values)-1]) {
		t.Errorf("min/max %v/%v, want %v/%v", h.Min(), h.Max(), values[0], values[len(values)-1])
	}
}

func TestMergeEqualsRecordingEverything(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("q=%v: merged %v, direct %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Mean() != all.Mean() || a.Min() != all.Min() || a.Max() != all.Max() {
		t.Errorf("merged mean/min/max %v/%v/%v, direct %v/%v/%v",
			a.Mean(), a.Min(), a.Max(), all.Mean(), all.Min(), all.Max())
	}
}

func TestEmptyAndSmallValues(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram must report zero")
	}
	h.Record(-5)
	h.Record(3)
	if got := h.Quantile(0.5); got != 0 {
		t.Errorf("median of {0, 3} = %v, want 0 (negative recorded as zero)", got)
	}
	if got := h.Quantile(1); got != 3 {
		t.Errorf("max quantile %v, want 3 (small values are exact)", got)
	}
}
