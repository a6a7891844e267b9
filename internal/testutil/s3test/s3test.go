// Package s3test runs throwaway S3-compatible servers for tests: the Versity
// S3 Gateway (versitygw, posix backend), a real S3 server that `make
// test-servers` builds into ./bin from its Go module. Each server listens on
// a free loopback port and keeps its objects in a temp dir; t.Cleanup stops
// it, even when the test fails, and Stop ends it early (to test what happens
// when the object store is gone).
package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/testutil"
)

// Credentials and region of every server started here.
const (
	AccessKey = "s3test-access"
	SecretKey = "s3test-secret-0123456789"
	Region    = "us-east-1"
)

// Server is a running versitygw. Its zero value is not usable: use Start.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:port.
	Endpoint string
	// Root is the directory holding one sub-directory per bucket.
	Root string

	cmd  *exec.Cmd
	out  *testutil.LockedBuffer
	done chan struct{} // closed when the process has exited

	stopOnce sync.Once
}

// startTimeout bounds how long a server may take to answer.
const startTimeout = 30 * time.Second

// Binary finds versitygw: ./bin/versitygw of the repository (make
// test-servers), else on PATH. Without one it skips t, or fails it when CI
// is set (where `make test` must have built it).
func Binary(t testing.TB) string {
	t.Helper()
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("s3test: versitygw not found; `make test-servers` builds it into ./bin")
	}
	t.Skip("s3test: versitygw not found (`make test-servers` builds it into ./bin)")
	return ""
}

// Start runs a server with the given buckets created (as directories of
// its posix backend) and waits until it answers.
func Start(t testing.TB, buckets ...string) *Server {
	t.Helper()
	bin := Binary(t)
	root := t.TempDir()
	for _, b := range buckets {
		if err := os.Mkdir(filepath.Join(root, b), 0o755); err != nil {
			t.Fatalf("s3test: bucket %s: %v", b, err)
		}
	}
	var lastErr error
	for range 5 {
		s, err := start(t, bin, root)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("s3test: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, root string) (*Server, error) {
	port, err := testutil.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "--port", addr, "--access", AccessKey, "--secret", SecretKey,
		"--region", Region, "posix", root)
	// Its own environment only: no ROOT_* or VGW_* of the caller's leak in.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + root}
	out := &testutil.LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{Endpoint: "http://" + addr, Root: root, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		// Any HTTP answer (an unsigned request gets 403) means it serves.
		if resp, err := client.Get(s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("versitygw on %s exited at start: %s", addr, out.String())
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("versitygw on %s did not answer within %v: %s", addr, startTimeout, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Env is the api-flow environment that points STORAGE_PROVIDER=s3 at this
// server, with content and meta the bucket names.
func (s *Server) Env(content, meta string) []string {
	return []string{
		"STORAGE_PROVIDER=s3",
		"S3_ENDPOINT=" + s.Endpoint,
		"S3_REGION=" + Region,
		"S3_ACCESS_KEY_ID=" + AccessKey,
		"S3_SECRET_ACCESS_KEY=" + SecretKey,
		"S3_USE_PATH_STYLE=true",
		"CONTENT_BUCKET=" + content,
		"META_BUCKET=" + meta,
	}
}

// Stop kills the server and waits until it has exited. It is safe to call
// more than once; Start registers it with t.Cleanup.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
}

// Log is what the server has written so far.
func (s *Server) Log() string { return s.out.String() }

// repoRoot is the directory of the go.mod above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
