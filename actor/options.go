package actor

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/presencehq/presence/clock"
)

// Defaults applied to zero-valued Options fields.
const (
	// DefaultMailboxSize bounds a mailbox when Options.MailboxSize is 0.
	DefaultMailboxSize = 1024
	// DefaultMaxRestarts is the panic budget when Options.MaxRestarts is 0.
	DefaultMaxRestarts = 5
	// DefaultRestartWindow is the budget's window when Options.RestartWindow is 0.
	DefaultRestartWindow = time.Minute
)

// Sentinel errors returned by the runtime. Hot-path errors are returned
// unwrapped so that Tell stays allocation-free; compare with errors.Is.
var (
	// ErrOverloaded means the actor's mailbox is full; the message was not accepted.
	ErrOverloaded = errors.New("actor: mailbox full")
	// ErrStopped means the system is shut down, or the actor died before replying.
	ErrStopped = errors.New("actor: stopped")
	// ErrNoActor means no actor is running for the key (TellExisting, Stop).
	ErrNoActor = errors.New("actor: no such actor")
)

// Options configure a System. The zero value is usable: every field documents
// what its zero value means.
type Options struct {
	// MailboxSize bounds each actor's mailbox; a Tell to a full mailbox returns
	// ErrOverloaded. Capacity is allocated as the backlog grows, never beyond
	// this bound. 0 means DefaultMailboxSize.
	MailboxSize int
	// IdleAfter passivates (stops and unregisters) an actor that has processed
	// no message for this long, has an empty mailbox and agrees through
	// Passivator. Idleness is checked every IdleAfter/4, so an idle actor stops
	// between IdleAfter and 1.5×IdleAfter after its last message. 0 means never.
	IdleAfter time.Duration
	// MaxRestarts is how many panics an actor survives within RestartWindow;
	// one more stops it for good. 0 means DefaultMaxRestarts; a negative value
	// means the first panic stops the actor.
	MaxRestarts int
	// RestartWindow is the sliding window MaxRestarts counts panics in.
	// 0 means DefaultRestartWindow.
	RestartWindow time.Duration
	// Clock drives idle detection and the restart window. nil means clock.Real.
	Clock clock.Clock
	// Logger receives panics (with key and stack) and give-ups. nil discards.
	Logger *slog.Logger
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	switch {
	case o.MailboxSize < 0:
		return fmt.Errorf("actor: MailboxSize %d is negative", o.MailboxSize)
	case o.IdleAfter < 0:
		return fmt.Errorf("actor: IdleAfter %v is negative", o.IdleAfter)
	case o.RestartWindow < 0:
		return fmt.Errorf("actor: RestartWindow %v is negative", o.RestartWindow)
	}
	return nil
}

// withDefaults returns o with every zero field replaced by its default.
func (o Options) withDefaults() Options {
	if o.MailboxSize == 0 {
		o.MailboxSize = DefaultMailboxSize
	}
	switch {
	case o.MaxRestarts == 0:
		o.MaxRestarts = DefaultMaxRestarts
	case o.MaxRestarts < 0:
		o.MaxRestarts = 0
	}
	if o.RestartWindow == 0 {
		o.RestartWindow = DefaultRestartWindow
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// sweepInterval is how often the janitor looks for idle actors.
func (o Options) sweepInterval() time.Duration {
	if d := o.IdleAfter / 4; d > 0 {
		return d
	}
	return o.IdleAfter
}
