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

// unavailableLog logs answers with a 5xx status the service chose (503) at
// a bounded rate; the next line logged says how many were left out before
// it. The status counts in the HTTP metrics stay complete.
type unavailableLog struct {
	clock   clock.Clock
	limit   *rate.Limiter
	skipped atomic.Int64
}

func newUnavailableLog(c clock.Clock) *unavailableLog {
	return &unavailableLog{clock: c, limit: rate.NewLimiter(unavailableLogPerSecond, unavailableLogBurst)}
}

// log writes one line for r's unavailable answer, unless the rate is spent.
func (u *unavailableLog) log(l *slog.Logger, r *http.Request, err error) {
	if !u.limit.AllowN(u.clock.Now(), 1) {
		u.skipped.Add(1)
		return
	}
	l.Warn("request unavailable", "method", r.Method, "path", r.URL.Path, "err", err,
		"not_logged_before", u.skipped.Swap(0))
}
