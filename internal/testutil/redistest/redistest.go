// Package redistest runs throwaway Redis servers for tests: the Debian
// redis-server binary (installed by scripts/test-deps.sh, which `make test`
// runs), on a free loopback port, with its files in a temp dir, without
// persistence. Every server started is stopped by t.Cleanup, even when the
// test fails; Stop ends one early (to test what happens when Redis is gone).
package redistest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/testutil"
)

// Server is a running redis-server. Its zero value is not usable: use Start.
type Server struct {
	// Addr is host:port on loopback.
	Addr string
	// URL is Addr as a REDIS_URL (redis://127.0.0.1:port/0).
	URL string

	t    testing.TB
	proc *testutil.Process
}

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 20 * time.Second

// Binary finds redis-server on PATH (or in /usr/bin, where Debian puts it).
// It skips t when there is none and CI is not set, and fails it under CI,
// where scripts/test-deps.sh must have installed it.
func Binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"redis-server", "/usr/bin/redis-server"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("redistest: redis-server not found; scripts/test-deps.sh installs it")
	}
	t.Skip("redistest: redis-server not found (scripts/test-deps.sh installs it)")
	return ""
}

// Start runs a redis-server and waits until it answers PING. A port taken
// between choosing and binding is retried on another.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	var lastErr error
	for range 5 {
		s, err := start(t, bin)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

func start(t testing.TB, bin string) (*Server, error) {
	port, err := testutil.FreePort()
	if err != nil {
		return nil, err
	}
	dir := t.TempDir()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "yes",
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	proc, err := testutil.StartProcess("redis-server on "+addr, cmd, startTimeout,
		func(ctx context.Context) bool { return ping(ctx, addr) == nil })
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: addr, URL: "redis://" + addr + "/0", t: t, proc: proc}
	t.Cleanup(s.Stop)
	return s, nil
}

// Stop kills the server and waits until it has exited. It is safe to call
// more than once; Start registers it with t.Cleanup.
func (s *Server) Stop() { s.proc.Stop() }

// Log is what the server has written so far.
func (s *Server) Log() string { return s.proc.Output() }

// ping sends PING in the inline protocol and wants +PONG.
func ping(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("+PONG")) {
		return fmt.Errorf("PING answered %q", buf[:n])
	}
	return nil
}
