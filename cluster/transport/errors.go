package transport

import (
	"context"
	"errors"
	"fmt"
)

// Error codes on the wire. Codes below firstUserCode are built in;
// Config.Errors[i] travels as firstUserCode+i.
const (
	codeUnknown     uint16 = 0
	codeDeadline    uint16 = 1
	codeCanceled    uint16 = 2
	codeFrameTooBig uint16 = 3
	firstUserCode          = 16
	maxErrorMessage        = 4 << 10
)

// RemoteError is an error returned by a peer's handler. It unwraps
// to the matching registered sentinel, if any, so errors.Is works across
// the wire; Message is the peer's error text.
type RemoteError struct {
	Addr    string // the peer that answered
	Code    uint16 // wire code; 0 when the error matched no sentinel
	Message string
	err     error // sentinel for Code, nil when unknown
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("transport: remote %s: %s", e.Addr, e.Message)
}

// Unwrap returns the sentinel error registered for Code, or nil.
func (e *RemoteError) Unwrap() error { return e.err }

// errorTable maps sentinel errors to wire codes and back.
type errorTable struct {
	byCode map[uint16]error
	order  []codedError // tried in order by code()
}

type codedError struct {
	code uint16
	err  error
}

func newErrorTable(user []error) errorTable {
	tab := errorTable{byCode: make(map[uint16]error, len(user)+3)}
	add := func(code uint16, err error) {
		tab.byCode[code] = err
		tab.order = append(tab.order, codedError{code, err})
	}
	// User sentinels first: an application error that also wraps a context
	// error keeps its more specific meaning.
	for i, err := range user {
		add(uint16(firstUserCode+i), err)
	}
	add(codeDeadline, context.DeadlineExceeded)
	add(codeCanceled, context.Canceled)
	add(codeFrameTooBig, ErrFrameTooLarge)
	return tab
}

// code returns the wire code of the first sentinel err matches.
func (tab *errorTable) code(err error) uint16 {
	for _, ce := range tab.order {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return codeUnknown
}

// decode rebuilds a handler error received from addr.
func (tab *errorTable) decode(addr string, code uint16, msg []byte) error {
	return &RemoteError{Addr: addr, Code: code, Message: string(msg), err: tab.byCode[code]}
}

// errorMessage bounds the error text sent back to a caller.
func errorMessage(err error) []byte {
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	return []byte(msg)
}
