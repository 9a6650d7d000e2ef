package membership

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
)

// logTags maps memberlist's level tags onto slog levels.
var logTags = []struct {
	tag   string
	level slog.Level
}{
	{"[DEBUG] ", slog.LevelDebug},
	{"[INFO] ", slog.LevelInfo},
	{"[WARN] ", slog.LevelWarn},
	{"[ERR] ", slog.LevelError},
	{"[ERROR] ", slog.LevelError},
}

// logWriter receives the lines memberlist prints through its
// *log.Logger and re-emits them as structured slog records, levelled by
// the "[LEVEL]" tag each line starts with.
type logWriter struct {
	log *slog.Logger
}

// Write implements io.Writer; memberlist's logger writes one line per call.
func (w logWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		w.line(strings.TrimRight(string(line), "\r\n"))
	}
	return len(p), nil
}

func (w logWriter) line(msg string) {
	if msg == "" {
		return
	}
	level := slog.LevelInfo
	for _, t := range logTags {
		if rest, ok := strings.CutPrefix(msg, t.tag); ok {
			msg, level = rest, t.level
			break
		}
	}
	msg = strings.TrimPrefix(msg, "memberlist: ")
	w.log.Log(context.Background(), level, msg)
}
