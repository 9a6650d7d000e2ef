package wire

import (
	"errors"
	"fmt"
	"slices"

	"github.com/presencehq/presence/presence"
)

// ErrBusy is answered when a channel cannot be handed over right now because
// the node is itself fetching or moving it; the other side retries later.
var ErrBusy = errors.New("router: channel hand-off in progress")

// ErrMalformed is wrapped by every decoding failure; it wraps
// presence.ErrInvalid so a corrupt frame never looks like a server fault.
var ErrMalformed = fmt.Errorf("%w: malformed router frame", presence.ErrInvalid)

// sentinels are the errors that cross the wire, by position.
var sentinels = []error{
	presence.ErrMoved,
	presence.ErrInvalid,
	presence.ErrUnauthorized,
	presence.ErrForbidden,
	presence.ErrNotFound,
	presence.ErrTooLarge,
	presence.ErrRateLimited,
	presence.ErrOverloaded,
	presence.ErrUnavailable,
	ErrBusy,
}

// TransportErrors lists the sentinel errors that must cross the wire, in the
// order every node registers them (transport.Config.Errors, where the
// server appends its own).
func TransportErrors() []error { return slices.Clone(sentinels) }

// IsSentinel reports whether err carries one of TransportErrors: an error
// the API maps to a status.
func IsSentinel(err error) bool { return sentinelCode(err) != 0 }

// sentinelCode is 1 + the position in TransportErrors of the first sentinel
// err matches, or 0 (the order the transport uses too).
func sentinelCode(err error) int {
	for i, s := range sentinels {
		if errors.Is(err, s) {
			return i + 1
		}
	}
	return 0
}

func sentinelOf(code uint64) error {
	if code == 0 || code > uint64(len(sentinels)) {
		return nil
	}
	return sentinels[code-1]
}

// RemoteError is the failure of one update of a batch, as the serving node
// reported it. It unwraps to the matching sentinel of TransportErrors, so
// errors.Is works as for errors the transport carries.
type RemoteError struct {
	Node    string // the node that answered
	Message string // its error text
	// sentinel is the matching entry of TransportErrors, nil when none.
	sentinel error
}

// Error implements error.
func (e *RemoteError) Error() string { return fmt.Sprintf("router: %s: %s", e.Node, e.Message) }

// Unwrap returns the sentinel the remote error matched, or nil.
func (e *RemoteError) Unwrap() error { return e.sentinel }
