package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/presencehq/presence/bench/load"
)

func TestOptionsRejectBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--mix", "1,2"},
		{"--sweep", "100,-5"},
		{"--plot", "x.png"},
		{"--clients-per-user", "65"},
		{"--channels", "1", "--channels-per-user", "2"},
		{"--urls", "", "--baseline=false"},
		{"extra"},
		{"--route", "nearest"},
		{"--route", "owner,owner"},
		{"--route", "other"}, // one URL: no node other than the owner
		{"--route", ""},
		{"--rounds", "0"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	o, err := parseOptions([]string{"--urls", "http://a/, http://b", "--sweep", "100, 200", "--route", "owner, other"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.urls, " ") != "http://a http://b" || len(o.rates()) != 2 {
		t.Errorf("urls %v rates %v", o.urls, o.rates())
	}
	if len(o.routes) != 2 || o.routes[1] != load.RouteOther || !o.needsOwners() {
		t.Errorf("routes %v", o.routes)
	}
}

func TestFormatting(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -45100: "-45,100"} {
		if got := commas(v); got != want {
			t.Errorf("commas(%v) = %q, want %q", v, got, want)
		}
	}
	for v, want := range map[float64]string{0.4123: "0.412ms", 1.234: "1.23ms", 12.34: "12.3ms", 123.4: "123ms", 1234: "1.23s"} {
		if got := fmtMs(v); got != want {
			t.Errorf("fmtMs(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSubscriberPlanCoversChannelsEvenly(t *testing.T) {
	per, plan := subscriberPlan(5, 4, 10)
	if len(plan) != 5 || len(plan[0]) != 4 {
		t.Fatalf("plan %v", plan)
	}
	for c, n := range per {
		if n != 2 {
			t.Errorf("channel %d followed by %d subscribers, want 2 (5 x 4 over 10)", c, n)
		}
	}
	if _, plan := subscriberPlan(1, 50, 3); len(plan[0]) != 3 {
		t.Errorf("a subscriber follows %d of 3 channels", len(plan[0]))
	}
}

func decode(t *testing.T, out []byte) report {
	t.Helper()
	var r report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return r
}

func TestBaselineOnlyRun(t *testing.T) {
	var out, errs bytes.Buffer
	code := run([]string{"--urls=", "--duration=100ms", "--concurrency=4", "--users=100", "--channels=10", "--json"}, &out, &errs)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	r := decode(t, out.Bytes())
	if r.Baseline == nil || r.Baseline.Requests == 0 || r.Baseline.Codes["200"] != r.Baseline.Requests {
		t.Fatalf("baseline %+v", r.Baseline)
	}
}

func TestRedisAutoRun(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("skipping: redis-server is not installed (apt-get install -y redis-server)")
	}
	var out, errs bytes.Buffer
	code := run([]string{"--urls=", "--baseline=false", "--redis=auto", "--redis-pipeline=4", "--duration=100ms",
		"--concurrency=4", "--users=100", "--channels=10", "--json"}, &out, &errs)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	r := decode(t, out.Bytes())
	if len(r.Redis) != 2 || r.Redis[0].Pipeline != 1 || r.Redis[1].Pipeline != 4 {
		t.Fatalf("redis runs %+v, want pipeline 1 then 4", r.Redis)
	}
	for _, p := range r.Redis {
		if p.Requests == 0 || p.OK != p.Requests {
			t.Errorf("pipeline %d: %d ops, %d ok, codes %v", p.Pipeline, p.Requests, p.OK, p.Codes)
		}
	}
}

func TestRouteSummaryComparesSameRound(t *testing.T) {
	o, err := parseOptions([]string{"--urls", "http://a,http://b", "--route", "owner,other", "--rounds", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(o)
	add := func(route string, round int, tput, nodes float64) {
		r.Presence = append(r.Presence, &phase{Target: "presence /presence/update, route " + route, Route: route, Round: round,
			Throughput: tput, CPU: &cpuUse{Nodes: []float64{nodes / 2, nodes / 2}, NodesTotal: nodes, Tool: 50}})
	}
	add("owner", 1, 1000, 80)
	add("other", 1, 500, 120)
	add("owner", 2, 2000, 70)
	add("other", 2, 1500, 100)
	var out bytes.Buffer
	r.writeText(&out)
	text := out.String()
	for _, want := range []string{
		"= 0.50 x route owner (round 1)", "= 0.75 x route owner (round 2)",
		"other / owner: 0.50, 0.75; mean 1,000 / 1,500 req/s = 0.67",
		"route owner: CPU per request, mean of the runs: nodes 75.0 µs, load tool 50.0 µs",
		"CPU per request: nodes 120.0 µs (60.0 + 60.0), load tool 50.0 µs",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}
