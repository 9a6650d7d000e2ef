// Package chart draws the load tool's sweep: achieved throughput and
// latency percentiles against offered load, as one PNG.
package chart

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// ErrNoPoints is returned by WriteSweep when no series has a point.
var ErrNoPoints = errors.New("chart: nothing to plot")

// Point is one run of a sweep.
type Point struct {
	Offered  float64 // requests/s asked for
	Achieved float64 // requests/s completed
	P50, P99 time.Duration
}

// Series is one system's sweep.
type Series struct {
	Name   string
	Points []Point
}

// minLatencyMs keeps the logarithmic latency axis away from zero.
const minLatencyMs = 0.001

// seriesColor is the colour of the i-th series.
func seriesColor(i int) color.Color {
	palette := [...]color.RGBA{
		{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
		{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	}
	return palette[i%len(palette)]
}

// WriteSweep writes a PNG to path: on top, achieved against offered load
// (with the ideal y = x); below, p50 (dashed) and p99 latency on a
// logarithmic axis.
func WriteSweep(path, title string, series []Series) error {
	maxOffered := 0.0
	for _, s := range series {
		for _, p := range s.Points {
			maxOffered = max(maxOffered, p.Offered, p.Achieved)
		}
	}
	if maxOffered == 0 {
		return ErrNoPoints
	}
	top, bottom := plot.New(), plot.New()
	top.Title.Text = title
	top.X.Label.Text, top.Y.Label.Text = "offered load (req/s)", "achieved (req/s)"
	bottom.X.Label.Text, bottom.Y.Label.Text = "offered load (req/s)", "latency (ms)"
	bottom.Y.Scale, bottom.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	for _, p := range []*plot.Plot{top, bottom} {
		p.Add(plotter.NewGrid())
		p.Legend.Top, p.Legend.Left = true, true
		p.X.Min = 0
	}
	top.Y.Min = 0
	ideal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: maxOffered, Y: maxOffered}})
	if err != nil {
		return err
	}
	ideal.Color, ideal.Dashes = color.Gray{Y: 0x99}, []vg.Length{vg.Points(2), vg.Points(2)}
	top.Add(ideal)
	top.Legend.Add("ideal", ideal)
	for i, s := range series {
		if err := addSeries(top, bottom, s, seriesColor(i)); err != nil {
			return err
		}
	}
	return save(path, top, bottom)
}

func addSeries(top, bottom *plot.Plot, s Series, c color.Color) error {
	achieved, p50, p99 := make(plotter.XYs, len(s.Points)), make(plotter.XYs, len(s.Points)), make(plotter.XYs, len(s.Points))
	for i, p := range s.Points {
		achieved[i] = plotter.XY{X: p.Offered, Y: p.Achieved}
		p50[i] = plotter.XY{X: p.Offered, Y: max(ms(p.P50), minLatencyMs)}
		p99[i] = plotter.XY{X: p.Offered, Y: max(ms(p.P99), minLatencyMs)}
	}
	line, points, err := plotter.NewLinePoints(achieved)
	if err != nil {
		return err
	}
	line.Color, points.Color = c, c
	top.Add(line, points)
	top.Legend.Add(s.Name, line, points)
	for _, l := range []struct {
		xys    plotter.XYs
		label  string
		dashed bool
	}{{p50, "p50", true}, {p99, "p99", false}} {
		line, points, err := plotter.NewLinePoints(l.xys)
		if err != nil {
			return err
		}
		line.Color, points.Color = c, c
		if l.dashed {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		bottom.Add(line, points)
		bottom.Legend.Add(fmt.Sprintf("%s %s", s.Name, l.label), line, points)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func save(path string, plots ...*plot.Plot) error {
	img := vgimg.New(8*vg.Inch, 9*vg.Inch)
	dc := draw.New(img)
	rows := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(rows, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
