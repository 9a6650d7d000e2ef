package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenThenReport(t *testing.T) {
	dir := t.TempDir()
	var out, errs bytes.Buffer
	if code := run([]string{"gen", "--out", dir, "--users", "3", "--channels", "2"}, &out, &errs); code != 0 {
		t.Fatalf("gen: exit %d: %s", code, errs.String())
	}
	if strings.TrimSpace(out.String()) != filepath.Join(dir, "heartbeat.lua") {
		t.Errorf("gen printed %q", out.String())
	}
	if data, err := os.ReadFile(filepath.Join(dir, "requests.tsv")); err != nil || strings.Count(string(data), "\n") != 3 {
		t.Fatalf("requests file: %v, %q", err, data)
	}
	runs := map[string]string{
		"01-r1-bare.out": "# server: bare\n# round: 1\n# load: 0.1 0.1 0.1\n# cpu_seconds: 2\n",
		"02-r1-node.out": "# server: node\n# round: 1\n# load: 0.2 0.1 0.1\n# cpu_seconds: 3\n",
	}
	result := map[string]string{
		"01-r1-bare.out": "RESULT requests=400000 duration_us=10000000 non2xx=0 connect_errors=0 read_errors=0 write_errors=0 timeouts=0 p50_us=1000 p90_us=5000 p99_us=12000 p999_us=20000 max_us=30000\n",
		"02-r1-node.out": "RESULT requests=300000 duration_us=10000000 non2xx=0 connect_errors=0 read_errors=0 write_errors=0 timeouts=0 p50_us=2000 p90_us=9000 p99_us=36000 p999_us=50000 max_us=60000\n",
	}
	var files []string
	for name, head := range runs {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(head+result[name]), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	out.Reset()
	if code := run(append([]string{"report"}, files...), &out, &errs); code != 0 {
		t.Fatalf("report: exit %d: %s", code, errs.String())
	}
	for _, want := range []string{"node / bare req/s: 0.75; means 30,000 / 40,000 = 0.75 (target >= 0.90: missed)", "10.0 µs", "5.0 µs"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if code := run([]string{"report", filepath.Join(dir, "heartbeat.lua")}, &out, &errs); code == 0 {
		t.Error("a file without a RESULT line was reported")
	}
	if code := run([]string{"nope"}, &out, &errs); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
}
