package api

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// poller watches the pooled streams' sockets with an epoll instance of its
// own, edge-triggered: EPOLLRDHUP, EPOLLHUP and EPOLLERR when the peer
// closed or the connection broke, EPOLLOUT when a socket that refused bytes
// has room again. Idle streams cause no event at all. The epoll descriptor
// is itself watched by Go's network poller, so run waits parked, like any
// goroutine reading a socket, and close wakes it.
type poller struct {
	report func(s *poolStream, gone bool)
	file   *os.File // the epoll descriptor
	raw    syscall.RawConn

	mu      sync.Mutex
	streams map[int32]*poolStream // by descriptor
	nextID  uint32
	closed  bool
}

// pollEvents are the events a stream's socket is registered for.
const pollEvents = syscall.EPOLLRDHUP | syscall.EPOLLOUT | -syscall.EPOLLET

// goneEvents mean the peer closed or the connection broke.
const goneEvents = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR

func newPoller(report func(s *poolStream, gone bool)) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("api: stream poller: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("api: stream poller: %w", err)
	}
	file := os.NewFile(uintptr(fd), "sse-epoll") // non-blocking: registered with Go's poller
	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("api: stream poller: %w", err)
	}
	return &poller{report: report, file: file, raw: raw, streams: make(map[int32]*poolStream)}, nil
}

// add registers s's socket.
func (p *poller) add(s *poolStream) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPoolClosed
	}
	p.nextID++
	s.id = p.nextID
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(s.fd), Pad: int32(s.id)}
	var err error
	ctlErr := p.raw.Control(func(epfd uintptr) {
		err = syscall.EpollCtl(int(epfd), syscall.EPOLL_CTL_ADD, s.fd, &ev)
	})
	if err = errors.Join(ctlErr, err); err != nil {
		return fmt.Errorf("api: stream poller: %w", err)
	}
	p.streams[int32(s.fd)] = s
	return nil
}

// remove unregisters s's socket, before it is closed: its descriptor may
// be reused at once by another connection.
func (p *poller) remove(s *poolStream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.streams[int32(s.fd)] != s {
		return
	}
	delete(p.streams, int32(s.fd))
	_ = p.raw.Control(func(epfd uintptr) {
		_ = syscall.EpollCtl(int(epfd), syscall.EPOLL_CTL_DEL, s.fd, nil)
	})
}

// run reports events until close.
func (p *poller) run() {
	events := make([]syscall.EpollEvent, 128)
	for {
		err := p.raw.Read(func(epfd uintptr) bool {
			n, err := syscall.EpollWait(int(epfd), events, 0)
			if err != nil || n <= 0 {
				return false // nothing ready (or EINTR): wait for the descriptor
			}
			p.dispatch(events[:n])
			return true
		})
		if err != nil {
			return // closed
		}
	}
}

// dispatch reports each event to its stream; an event of a descriptor
// reused by a newer stream since it was read is dropped.
func (p *poller) dispatch(events []syscall.EpollEvent) {
	for _, ev := range events {
		p.mu.Lock()
		s := p.streams[ev.Fd]
		p.mu.Unlock()
		if s == nil || s.id != uint32(ev.Pad) {
			continue
		}
		p.report(s, ev.Events&goneEvents != 0)
	}
}

// close stops run and releases the epoll descriptor.
func (p *poller) close() {
	p.mu.Lock()
	p.closed = true
	p.streams = nil
	p.mu.Unlock()
	_ = p.file.Close()
}

// sendNonblocking writes b to a socket without waiting: n is what the
// socket took, errno EAGAIN when it took nothing. MSG_NOSIGNAL: a peer
// that reset the connection is an EPIPE, not a signal. A raw system call:
// it cannot block, so the runtime need not hand the P to another thread
// meanwhile (as it does for a system call running 20 µs or more).
func sendNonblocking(fd uintptr, b []byte) (n int, errno syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)),
			syscall.MSG_NOSIGNAL|syscall.MSG_DONTWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

const pollerAvailable = true
