//go:build unix

package proc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors of Node's methods.
var (
	ErrRunning    = errors.New("proc: node is running")
	ErrNotRunning = errors.New("proc: node is not running")
	ErrNoExit     = errors.New("proc: node did not exit in time")
)

// Exit describes how a node's process ended.
type Exit struct {
	Code   int           // exit code; -1 when a signal ended it
	Signal string        // the signal that ended it, if any
	Took   time.Duration // from the signal the caller sent (Term, Kill) to the exit
}

func (e Exit) String() string {
	if e.Signal != "" {
		return fmt.Sprintf("ended by signal %q after %v", e.Signal, e.Took.Round(time.Millisecond))
	}
	return fmt.Sprintf("exit code %d after %v", e.Code, e.Took.Round(time.Millisecond))
}

// Node is one presence-node process. Its name, addresses and data
// directory stay the same across restarts. Its methods are safe for
// concurrent use.
type Node struct {
	Name    string
	HTTP    string // host:port of the public API
	Gossip  string
	RPC     string // node-to-node calls and Raft
	DataDir string
	LogPath string

	binary string
	args   []string // flags, including --join

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current process has exited
	exit     Exit
	paused   bool
	starts   int
	signaled time.Time // when Term or Kill sent its signal
}

// URL is the node's public base URL.
func (n *Node) URL() string { return "http://" + n.HTTP }

// Start launches the node's process; its output is appended to LogPath.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runningLocked() {
		return fmt.Errorf("%s: %w", n.Name, ErrRunning)
	}
	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("proc: %s log: %w", n.Name, err)
	}
	n.starts++
	fmt.Fprintf(logFile, "=== proc: start %d of %s at %s: %s %s\n", n.starts, n.Name,
		time.Now().Format(time.RFC3339Nano), n.binary, strings.Join(n.args, " "))
	cmd := exec.Command(n.binary, n.args...)
	cmd.Env = nodeEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("proc: start %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.paused, n.exit = cmd, done, false, Exit{}
	go n.wait(cmd, logFile, done)
	return nil
}

// nodeEnv is the test's environment without PRESENCE_* variables, which
// would configure the node behind the flags' back.
func nodeEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PRESENCE_") {
			out = append(out, kv)
		}
	}
	return out
}

// wait reaps the process and records how it ended.
func (n *Node) wait(cmd *exec.Cmd, logFile *os.File, done chan struct{}) {
	_ = cmd.Wait()
	ended := time.Now()
	n.mu.Lock()
	n.exit = Exit{Code: cmd.ProcessState.ExitCode()}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		n.exit.Signal = ws.Signal().String()
	}
	if !n.signaled.IsZero() {
		n.exit.Took = ended.Sub(n.signaled)
	}
	n.signaled = time.Time{}
	n.mu.Unlock()
	fmt.Fprintf(logFile, "=== proc: %s ended at %s: %s\n", n.Name, ended.Format(time.RFC3339Nano), n.exit)
	logFile.Close()
	close(done)
}

// Running reports whether the node's process is alive (paused counts).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

func (n *Node) runningLocked() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Paused reports whether the node is stopped by Pause.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused && n.runningLocked()
}

// signal sends sig to the running process and returns its done channel.
func (n *Node) signal(sig syscall.Signal, mark bool) (<-chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return nil, fmt.Errorf("%s: %w", n.Name, ErrNotRunning)
	}
	if mark {
		n.signaled = time.Now()
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return nil, fmt.Errorf("proc: %s: %v: %w", n.Name, sig, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return n.done, nil
}

// Kill sends SIGKILL and waits for the process to end.
func (n *Node) Kill() (Exit, error) {
	done, err := n.signal(syscall.SIGKILL, true)
	if err != nil {
		return Exit{}, err
	}
	<-done
	return n.LastExit(), nil
}

// Term sends SIGTERM and waits up to timeout for the process to end. When
// it does not, the node is killed and the error wraps ErrNoExit.
func (n *Node) Term(timeout time.Duration) (Exit, error) {
	done, err := n.signal(syscall.SIGTERM, true)
	if err != nil {
		return Exit{}, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return n.LastExit(), nil
	case <-t.C:
	}
	_, _ = n.signal(syscall.SIGKILL, false)
	<-done
	return n.LastExit(), fmt.Errorf("%s: no exit %v after SIGTERM: %w", n.Name, timeout, ErrNoExit)
}

// Pause sends SIGSTOP: the process freezes with its sockets open.
func (n *Node) Pause() error {
	_, err := n.signal(syscall.SIGSTOP, false)
	return err
}

// Resume sends SIGCONT to a paused node.
func (n *Node) Resume() error {
	_, err := n.signal(syscall.SIGCONT, false)
	return err
}

// Restart starts a stopped node again with the same name, ports, flags and
// data directory.
func (n *Node) Restart() error { return n.Start() }

// LastExit returns how the node's last process ended; the zero Exit before
// any ended.
func (n *Node) LastExit() Exit {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exit
}

// Tail returns the last lines of the node's log file.
func (n *Node) Tail(lines int) string {
	f, err := os.Open(n.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	ring := make([]string, 0, lines)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(ring) == lines {
			ring = ring[1:]
		}
		ring = append(ring, sc.Text())
	}
	return strings.Join(ring, "\n")
}
