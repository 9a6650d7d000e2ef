package cluster

import (
	"context"
	"errors"
	"fmt"
)

// Error codes on the wire. Codes below transportFirstUserCode are built in;
// TransportConfig.Errors[i] travels as transportFirstUserCode+i.
const (
	transportCodeUnknown     uint16 = 0
	transportCodeDeadline    uint16 = 1
	transportCodeCanceled    uint16 = 2
	transportCodeFrameTooBig uint16 = 3
	transportFirstUserCode          = 16
	transportMaxErrorMessage        = 4 << 10
)

// TransportRemoteError is an error returned by a peer's handler. It unwraps
// to the matching registered sentinel, if any, so errors.Is works across
// the wire; Message is the peer's error text.
type TransportRemoteError struct {
	Addr    string // the peer that answered
	Code    uint16 // wire code; 0 when the error matched no sentinel
	Message string
	err     error // sentinel for Code, nil when unknown
}

// Error implements error.
func (e *TransportRemoteError) Error() string {
	return fmt.Sprintf("cluster: remote %s: %s", e.Addr, e.Message)
}

// Unwrap returns the sentinel error registered for Code, or nil.
func (e *TransportRemoteError) Unwrap() error { return e.err }

// transportErrorTable maps sentinel errors to wire codes and back.
type transportErrorTable struct {
	byCode map[uint16]error
	order  []transportCodedError // tried in order by code()
}

type transportCodedError struct {
	code uint16
	err  error
}

func newTransportErrorTable(user []error) transportErrorTable {
	tab := transportErrorTable{byCode: make(map[uint16]error, len(user)+3)}
	add := func(code uint16, err error) {
		tab.byCode[code] = err
		tab.order = append(tab.order, transportCodedError{code, err})
	}
	// User sentinels first: an application error that also wraps a context
	// error keeps its more specific meaning.
	for i, err := range user {
		add(uint16(transportFirstUserCode+i), err)
	}
	add(transportCodeDeadline, context.DeadlineExceeded)
	add(transportCodeCanceled, context.Canceled)
	add(transportCodeFrameTooBig, ErrTransportFrameTooLarge)
	return tab
}

// code returns the wire code of the first sentinel err matches.
func (tab *transportErrorTable) code(err error) uint16 {
	for _, ce := range tab.order {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return transportCodeUnknown
}

// decode rebuilds a handler error received from addr.
func (tab *transportErrorTable) decode(addr string, code uint16, msg []byte) error {
	return &TransportRemoteError{Addr: addr, Code: code, Message: string(msg), err: tab.byCode[code]}
}

// transportErrorMessage bounds the error text sent back to a caller.
func transportErrorMessage(err error) []byte {
	msg := err.Error()
	if len(msg) > transportMaxErrorMessage {
		msg = msg[:transportMaxErrorMessage]
	}
	return []byte(msg)
}
