package wrk

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ErrNoResult is returned for an output without the script's RESULT line
// (wrk failed, or ran another script).
var ErrNoResult = errors.New("wrk: no RESULT line in the output")

// Result is what the script's done() prints.
type Result struct {
	Requests                 int64
	Duration                 time.Duration
	Non2xx                   int64
	ConnectErrors            int64
	ReadErrors, WriteErrors  int64
	Timeouts                 int64
	P50, P90, P99, P999, Max time.Duration
}

// Rate is the requests per second of the run.
func (r Result) Rate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Duration.Seconds()
}

// Errors is the number of calls that failed: non-2xx answers and socket
// errors.
func (r Result) Errors() int64 {
	return r.Non2xx + r.ConnectErrors + r.ReadErrors + r.WriteErrors + r.Timeouts
}

// Run is one wrk run of the benchmark as the script records it: header
// lines "# key: value" written before wrk's output, then that output.
type Run struct {
	Server string
	Round  int // 0: warm-up
	// LoadAvg is /proc/loadavg's three averages when the run started.
	LoadAvg [3]float64
	// CPU is the CPU time the server's processes used during the run; 0
	// when the script could not read it.
	CPU time.Duration
	// ClientCPU is the CPU time wrk used during the run (0: unknown). The
	// servers and wrk share the cores, so wrk's cost per request bounds
	// the rates as much as the server's.
	ClientCPU time.Duration
	Result
}

// CPUPerRequest is the server's CPU time per request (0 if unknown).
func (r Run) CPUPerRequest() time.Duration {
	return r.perRequest(r.CPU)
}

// ClientCPUPerRequest is wrk's CPU time per request (0 if unknown).
func (r Run) ClientCPUPerRequest() time.Duration {
	return r.perRequest(r.ClientCPU)
}

func (r Run) perRequest(cpu time.Duration) time.Duration {
	if cpu <= 0 || r.Requests == 0 {
		return 0
	}
	return cpu / time.Duration(r.Requests)
}

// ParseRun reads a run file.
func ParseRun(r io.Reader) (Run, error) {
	var run Run
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "# "); ok {
			key, value, _ := strings.Cut(rest, ":")
			if err := run.header(strings.TrimSpace(key), strings.TrimSpace(value)); err != nil {
				return run, err
			}
			continue
		}
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			res, err := parseResult(rest)
			if err != nil {
				return run, err
			}
			run.Result, found = res, true
		}
	}
	if err := sc.Err(); err != nil {
		return run, err
	}
	if !found {
		return run, ErrNoResult
	}
	return run, nil
}

func (run *Run) header(key, value string) error {
	var err error
	switch key {
	case "server":
		run.Server = value
	case "round":
		run.Round, err = strconv.Atoi(value)
	case "load":
		f := strings.Fields(value)
		if len(f) < 3 {
			return fmt.Errorf("wrk: load %q: want three averages", value)
		}
		for i := range 3 {
			if run.LoadAvg[i], err = strconv.ParseFloat(f[i], 64); err != nil {
				break
			}
		}
	case "cpu_seconds":
		run.CPU, err = seconds(value)
	case "client_cpu_seconds":
		run.ClientCPU, err = seconds(value)
	}
	if err != nil {
		return fmt.Errorf("wrk: header %s: %w", key, err)
	}
	return nil
}

func seconds(value string) (time.Duration, error) {
	s, err := strconv.ParseFloat(value, 64)
	return time.Duration(s * float64(time.Second)), err
}

func parseResult(s string) (Result, error) {
	var r Result
	durations := map[string]*time.Duration{
		"p50_us": &r.P50, "p90_us": &r.P90, "p99_us": &r.P99, "p999_us": &r.P999, "max_us": &r.Max, "duration_us": &r.Duration,
	}
	counts := map[string]*int64{
		"requests": &r.Requests, "non2xx": &r.Non2xx, "connect_errors": &r.ConnectErrors,
		"read_errors": &r.ReadErrors, "write_errors": &r.WriteErrors, "timeouts": &r.Timeouts,
	}
	seen := 0
	for _, field := range strings.Fields(s) {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return r, fmt.Errorf("wrk: RESULT field %q", field)
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return r, fmt.Errorf("wrk: RESULT %s: %w", key, err)
		}
		if d, ok := durations[key]; ok {
			*d = time.Duration(n) * time.Microsecond
		} else if c, ok := counts[key]; ok {
			*c = n
		} else {
			continue
		}
		seen++
	}
	if seen != len(durations)+len(counts) {
		return r, fmt.Errorf("wrk: RESULT line lacks fields: %q", s)
	}
	return r, nil
}
