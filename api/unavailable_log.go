package api

import (
	"log/slog"
	"net/http"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/presencehq/presence/clock"
)

// Rate of the "request unavailable" log lines: a partition, a node's
// restart or the whole cluster stopping refuse many requests at once, and
// a line for each would flood the logs (and whatever ships them).
const (
	unavailableLogPerSecond = 5
	unavailableLogBurst     = 20
)

// logThrottle bounds the rate of one kind of log line and counts the lines
// it held back, which the next line logged reports.
type logThrottle struct {
	clock   clock.Clock
	limit   *rate.Limiter
	skipped atomic.Int64
}

func newLogThrottle(c clock.Clock, perSecond float64, burst int) *logThrottle {
	return &logThrottle{clock: c, limit: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// allow reports whether a line may be logged now and, if so, how many
// were held back since the last one.
func (t *logThrottle) allow() (notLoggedBefore int64, ok bool) {
	if !t.limit.AllowN(t.clock.Now(), 1) {
		t.skipped.Add(1)
		return 0, false
	}
	return t.skipped.Swap(0), true
}

// unavailableLog logs answers with a 5xx status the service chose (503) at
// a bounded rate; the next line logged says how many were left out before
// it. The status counts in the HTTP metrics stay complete.
type unavailableLog struct{ throttle *logThrottle }

func newUnavailableLog(c clock.Clock) *unavailableLog {
	return &unavailableLog{throttle: newLogThrottle(c, unavailableLogPerSecond, unavailableLogBurst)}
}

// log writes one line for r's unavailable answer, unless the rate is spent.
func (u *unavailableLog) log(l *slog.Logger, r *http.Request, err error) {
	skipped, ok := u.throttle.allow()
	if !ok {
		return
	}
	l.Warn("request unavailable", "method", r.Method, "path", r.URL.Path, "err", err,
		"not_logged_before", skipped)
}
