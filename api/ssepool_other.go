//go:build !linux

package api

import "syscall"

// poller is Linux-only; elsewhere every stream keeps its request's goroutine.
type poller struct{}

func newPoller(func(*poolStream, bool)) (*poller, error) { return nil, errNoPoller }

func (*poller) add(*poolStream) error { return errNoPoller }
func (*poller) remove(*poolStream)    {}
func (*poller) run()                  {}
func (*poller) close()                {}

func sendNonblocking(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.ENOSYS }

const pollerAvailable = false
