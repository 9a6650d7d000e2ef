package raftstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// traceLevel is where hclog's Trace lands in slog, one step below Debug.
const traceLevel = slog.LevelDebug - 4

// hclogAdapter adapts the hclog.Logger that raft requires onto the node's
// slog.Logger, so Raft's messages join the one structured log stream.
type hclogAdapter struct {
	root    *slog.Logger // the logger given by the node, without name or implied args
	out     *slog.Logger // root with the name and implied args attached
	name    string
	implied []any
	// min is an hclog.Level shared by every logger derived with With or Named,
	// as hclog does; NoLevel leaves filtering to the slog handler alone.
	min *atomic.Int32
}

// newHclog returns an hclog.Logger writing into root under the given name.
func newHclog(root *slog.Logger, name string) hclog.Logger {
	return newHclogShared(root, name, nil, new(atomic.Int32))
}

func newHclogShared(root *slog.Logger, name string, implied []any, min *atomic.Int32) *hclogAdapter {
	out := root
	if name != "" {
		out = out.With("component", name)
	}
	if len(implied) > 0 {
		out = out.With(implied...)
	}
	return &hclogAdapter{root: root, out: out, name: name, implied: implied, min: min}
}

// slogLevel maps an hclog level onto slog's scale.
func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return traceLevel
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (l *hclogAdapter) enabled(level hclog.Level) bool {
	if level == hclog.Off {
		return false
	}
	if min := hclog.Level(l.min.Load()); min != hclog.NoLevel && level < min {
		return false
	}
	return l.out.Enabled(context.Background(), slogLevel(level))
}

// Log implements hclog.Logger.
func (l *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	if !l.enabled(level) {
		return
	}
	l.out.Log(context.Background(), slogLevel(level), msg, formatArgs(args)...)
}

// formatArgs renders hclog.Fmt values (raft logs its server lists
// with them), which slog would otherwise print as the raw format and
// arguments.
func formatArgs(args []any) []any {
	for i, a := range args {
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, isString := f[0].(string); isString {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	return args
}

// Trace implements hclog.Logger.
func (l *hclogAdapter) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }

// Debug implements hclog.Logger.
func (l *hclogAdapter) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }

// Info implements hclog.Logger.
func (l *hclogAdapter) Info(msg string, args ...any) { l.Log(hclog.Info, msg, args...) }

// Warn implements hclog.Logger.
func (l *hclogAdapter) Warn(msg string, args ...any) { l.Log(hclog.Warn, msg, args...) }

// Error implements hclog.Logger.
func (l *hclogAdapter) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

// IsTrace implements hclog.Logger.
func (l *hclogAdapter) IsTrace() bool { return l.enabled(hclog.Trace) }

// IsDebug implements hclog.Logger.
func (l *hclogAdapter) IsDebug() bool { return l.enabled(hclog.Debug) }

// IsInfo implements hclog.Logger.
func (l *hclogAdapter) IsInfo() bool { return l.enabled(hclog.Info) }

// IsWarn implements hclog.Logger.
func (l *hclogAdapter) IsWarn() bool { return l.enabled(hclog.Warn) }

// IsError implements hclog.Logger.
func (l *hclogAdapter) IsError() bool { return l.enabled(hclog.Error) }

// ImpliedArgs implements hclog.Logger.
func (l *hclogAdapter) ImpliedArgs() []any { return append([]any(nil), l.implied...) }

// With implements hclog.Logger.
func (l *hclogAdapter) With(args ...any) hclog.Logger {
	implied := append(append([]any(nil), l.implied...), args...)
	return newHclogShared(l.root, l.name, implied, l.min)
}

// Name implements hclog.Logger.
func (l *hclogAdapter) Name() string { return l.name }

// Named implements hclog.Logger; names nest with a dot, as in hclog.
func (l *hclogAdapter) Named(name string) hclog.Logger {
	if l.name != "" {
		name = l.name + "." + name
	}
	return newHclogShared(l.root, name, l.implied, l.min)
}

// ResetNamed implements hclog.Logger.
func (l *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return newHclogShared(l.root, name, l.implied, l.min)
}

// SetLevel implements hclog.Logger: messages below level are dropped even if
// the slog handler would accept them.
func (l *hclogAdapter) SetLevel(level hclog.Level) { l.min.Store(int32(level)) }

// GetLevel implements hclog.Logger.
func (l *hclogAdapter) GetLevel() hclog.Level { return hclog.Level(l.min.Load()) }

// StandardLogger implements hclog.Logger.
func (l *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

// StandardWriter implements hclog.Logger: each written line becomes one record.
func (l *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &hclogWriter{logger: l, opts: *opts}
}

// hclogWriter turns lines written by a standard library logger into records.
type hclogWriter struct {
	logger *hclogAdapter
	opts   hclog.StandardLoggerOptions
}

// levelTags are the prefixes hclog recognises when inferring levels.
var levelTags = []struct {
	tag   string
	level hclog.Level
}{
	{"[TRACE]", hclog.Trace},
	{"[DEBUG]", hclog.Debug},
	{"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn},
	{"[ERR]", hclog.Error},
	{"[ERROR]", hclog.Error},
}

// Write implements io.Writer.
func (w *hclogWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		msg := strings.TrimSpace(string(line))
		if msg == "" {
			continue
		}
		level, msg := w.level(msg)
		w.logger.Log(level, msg)
	}
	return len(p), nil
}

// level picks the record level for one line and strips a recognised tag.
func (w *hclogWriter) level(msg string) (hclog.Level, string) {
	if w.opts.ForceLevel != hclog.NoLevel {
		return w.opts.ForceLevel, msg
	}
	if !w.opts.InferLevels && !w.opts.InferLevelsWithTimestamp {
		return hclog.Info, msg
	}
	for _, t := range levelTags {
		i := strings.Index(msg, t.tag)
		// Without timestamps the tag must lead the line; with them it may
		// follow the timestamp.
		if i == 0 || (i > 0 && w.opts.InferLevelsWithTimestamp) {
			return t.level, strings.TrimSpace(msg[i+len(t.tag):])
		}
	}
	return hclog.Info, msg
}
