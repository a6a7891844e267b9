// Package s3test runs throwaway S3-compatible servers for tests: the Versity
// S3 Gateway (versitygw, posix backend), a real S3 server that `make
// test-servers` builds into ./bin from its Go module. Each server listens on
// a free loopback port and keeps its objects in a temp dir; t.Cleanup stops
// it, even when the test fails, and Stop ends it early (to test what happens
// when the object store is gone).
package s3test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

	proc *testutil.Process
}

// startTimeout bounds how long a server may take to answer.
const startTimeout = 30 * time.Second

// Binary finds versitygw: ./bin/versitygw of the repository (make
// test-servers), else on PATH. Without one it skips t, or fails it when CI
// is set (where `make test` must have built it).
func Binary(t testing.TB) string {
	t.Helper()
	if root, err := testutil.RepoRoot(); err == nil {
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
	endpoint := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	proc, err := testutil.StartProcess("versitygw on "+addr, cmd, startTimeout, func(context.Context) bool {
		// Any HTTP answer (an unsigned request gets 403) means it serves.
		resp, err := client.Get(endpoint + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	if err != nil {
		return nil, err
	}
	s := &Server{Endpoint: endpoint, Root: root, proc: proc}
	t.Cleanup(s.Stop)
	return s, nil
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
func (s *Server) Stop() { s.proc.Stop() }

// Log is what the server has written so far.
func (s *Server) Log() string { return s.proc.Output() }
