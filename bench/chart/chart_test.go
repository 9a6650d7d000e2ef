package chart

import (
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteSweepWritesAPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sweep.png")
	series := []Series{
		{Name: "presence", Points: []Point{
			{Offered: 1000, Achieved: 1000, P50: time.Millisecond, P99: 3 * time.Millisecond},
			{Offered: 5000, Achieved: 4800, P50: 2 * time.Millisecond, P99: 40 * time.Millisecond},
		}},
		{Name: "redis", Points: []Point{{Offered: 1000, Achieved: 1000}}}, // zero latency must not break the log axis
	}
	if err := WriteSweep(path, "test", series); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("image is %v", b)
	}
}

func TestWriteSweepRefusesEmpty(t *testing.T) {
	if err := WriteSweep(filepath.Join(t.TempDir(), "x.png"), "", nil); !errors.Is(err, ErrNoPoints) {
		t.Fatalf("err = %v, want ErrNoPoints", err)
	}
}
