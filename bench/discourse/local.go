package discourse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotInstalled is returned by StartLocal when redis-server is not on PATH.
var ErrNotInstalled = errors.New("redis-server is not installed (Debian: apt-get install -y redis-server)")

// Installed reports whether redis-server is on PATH.
func Installed() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// LocalServer is a redis-server child process on 127.0.0.1 without
// persistence, for tests and the load tool's --redis auto mode.
type LocalServer struct {
	// Addr is host:port of the server.
	Addr string
	cmd  *exec.Cmd
	dir  string
}

// StartLocal starts redis-server on a free loopback port and waits until it
// answers PING (at most startTimeout).
func StartLocal(ctx context.Context, startTimeout time.Duration) (*LocalServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "presence-load-redis-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("discourse: start redis-server: %w", err)
	}
	s := &LocalServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir}
	if err := s.waitReady(ctx, startTimeout); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *LocalServer) waitReady(ctx context.Context, timeout time.Duration) error {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(timeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("discourse: redis-server on %s not ready: %w", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server and removes its directory.
func (s *LocalServer) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	_ = os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
