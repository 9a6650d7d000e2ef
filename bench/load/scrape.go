package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Memory is a node's memory as its /metrics reports it, in bytes, and the
// CPU time its process used so far (0 when not reported).
type Memory struct {
	HeapInuse float64 `json:"heap_inuse_bytes"`
	RSS       float64 `json:"resident_bytes"`
	CPU       float64 `json:"cpu_seconds,omitempty"`
}

// ScrapeMemory reads go_memstats_heap_inuse_bytes and
// process_resident_memory_bytes from base's /metrics.
func ScrapeMemory(ctx context.Context, client *http.Client, base string) (Memory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return Memory{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Memory{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Memory{}, fmt.Errorf("GET %s/metrics: %s", base, resp.Status)
	}
	return ParseMemory(resp.Body)
}

// ParseMemory extracts the two memory gauges, and process_cpu_seconds_total
// when present, from Prometheus text format.
func ParseMemory(r io.Reader) (Memory, error) {
	var m Memory
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		if name == "process_cpu_seconds_total" {
			if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
				m.CPU = v
			}
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			dst = &m.HeapInuse
		case "process_resident_memory_bytes":
			dst = &m.RSS
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return m, fmt.Errorf("metric %s: %w", name, err)
		}
		*dst = v
		found++
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if found == 0 {
		return m, fmt.Errorf("no memory metrics found")
	}
	return m, nil
}
