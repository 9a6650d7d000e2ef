package raftstore

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// logRecords decodes the JSON lines a slog.JSONHandler wrote.
func logRecords(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range bytes.Lines(buf.Bytes()) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("bad log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	buf.Reset()
	return out
}

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	root := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := newHclog(root, "raft")

	l.Trace("hidden") // below the handler's level
	l.Named("transport").With("peer", "n2").Warn("dial failed", "err", "refused")
	recs := logRecords(t, &buf)
	if len(recs) != 1 {
		t.Fatalf("records = %v, want only the warning", recs)
	}
	r := recs[0]
	if r["level"] != "WARN" || r["msg"] != "dial failed" || r["component"] != "raft.transport" ||
		r["peer"] != "n2" || r["err"] != "refused" {
		t.Fatalf("warning record = %v", r)
	}
	if l.IsTrace() || !l.IsDebug() {
		t.Fatal("IsTrace/IsDebug do not follow the handler's level")
	}

	l.SetLevel(hclog.Warn) // shared with derived loggers, as in hclog
	l.Named("x").Info("dropped")
	l.Error("kept")
	if recs := logRecords(t, &buf); len(recs) != 1 || recs[0]["msg"] != "kept" || recs[0]["level"] != "ERROR" {
		t.Fatalf("after SetLevel(Warn) records = %v", recs)
	}
	if l.GetLevel() != hclog.Warn {
		t.Fatalf("GetLevel() = %v", l.GetLevel())
	}
	l.SetLevel(hclog.NoLevel)

	if got := l.ResetNamed("other").Name(); got != "other" {
		t.Fatalf("ResetNamed name = %q", got)
	}
	if got := l.With("a", 1).ImpliedArgs(); len(got) != 2 || got[0] != "a" {
		t.Fatalf("ImpliedArgs = %v", got)
	}
}

func TestHclogStandardWriter(t *testing.T) {
	var buf bytes.Buffer
	root := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := newHclog(root, "")

	std := l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Print("[WARN] disk slow")
	std.Print("plain line")
	recs := logRecords(t, &buf)
	if len(recs) != 2 || recs[0]["level"] != "WARN" || recs[0]["msg"] != "disk slow" ||
		recs[1]["level"] != "INFO" || recs[1]["msg"] != "plain line" {
		t.Fatalf("inferred records = %v", recs)
	}

	w := l.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error})
	if _, err := w.Write([]byte("one\n\ntwo\n")); err != nil {
		t.Fatal(err)
	}
	recs = logRecords(t, &buf)
	if len(recs) != 2 || recs[0]["level"] != "ERROR" || recs[1]["msg"] != "two" {
		t.Fatalf("forced records = %v", recs)
	}
}

func TestHclogFormatsFmtValues(t *testing.T) {
	var buf bytes.Buffer
	logger := newHclog(slog.New(slog.NewJSONHandler(&buf, nil)), "raft")
	logger.Info("servers", "servers", hclog.Fmt("%+v", []string{"a", "b"}))
	if !strings.Contains(buf.String(), `"servers":"[a b]"`) {
		t.Fatalf("hclog.Fmt value not rendered: %s", buf.String())
	}
}
