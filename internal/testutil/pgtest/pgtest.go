// Package pgtest starts throwaway PostgreSQL servers for tests: initdb in a
// fresh temporary directory, postgres on a free loopback port, stopped and
// removed in t.Cleanup (also when the test fails).
//
// PostgreSQL refuses to run as root: when the test runs as root the server
// runs as the "postgres" system user (created if missing). The binaries are
// those of the Debian packages (/usr/lib/postgresql/*/bin) or on PATH; when
// there are none the test is skipped with a message saying how to install
// them (scripts/test-deps.sh).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/testutil"

	"github.com/jackc/pgx/v5"
)

// Options tunes Start. The zero value is a server for correctness tests.
type Options struct {
	// Durable keeps fsync and synchronous commit on (for benchmarks whose
	// figures must include them); false turns them off, which is faster
	// and loses nothing a test needs (the server never outlives it).
	Durable bool
}

// Server is a running throwaway PostgreSQL server.
type Server struct {
	// URL connects to its "postgres" database as the superuser "postgres".
	URL string
	// Port is its loopback TCP port.
	Port int

	n    atomic.Int64 // databases made by NewDatabase
	stop func()       // stops the server, once
}

// Stop shuts the server down before the test ends (to test what happens
// when the database is gone); t.Cleanup stops it anyway.
func (s *Server) Stop() { s.stop() }

// Start starts a server for t, stopped and removed when t ends.
func Start(t testing.TB, o ...Options) *Server {
	t.Helper()
	var opt Options
	if len(o) > 0 {
		opt = o[0]
	}
	bin, err := binDir()
	if err != nil {
		t.Skipf("pgtest: %v (install the Debian package postgresql: scripts/test-deps.sh)", err)
	}
	cred, err := credential()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	syncMode := "on"
	if !opt.Durable {
		syncMode = "off"
	}
	var s *Server
	for attempt := 0; ; attempt++ {
		port, err := testutil.FreePort()
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync="+syncMode, "-c", "synchronous_commit="+syncMode,
			"-c", "full_page_writes="+syncMode, "-c", "max_connections=200", "-c", "log_min_messages=warning")
		logf, err := os.Create(filepath.Join(dir, "postgres.log"))
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("pgtest: start postgres: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); logf.Close() }()
		t.Cleanup(func() { stop(cmd, exited) }) // a no-op after Stop
		s = &Server{URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), Port: port,
			stop: sync.OnceFunc(func() { stop(cmd, exited) })}
		err = waitReady(s.URL, exited, 60*time.Second)
		if err == nil {
			return s
		}
		stop(cmd, exited)
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("pgtest: postgres did not start: %v\n%s", err, log)
		}
	}
}

// NewDatabase creates an empty database on s and returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("db%d", s.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	return strings.Replace(s.URL, "/postgres?", "/"+name+"?", 1)
}

// DB starts a server for t and returns the URL of an empty database on it.
func DB(t testing.TB, o ...Options) string {
	t.Helper()
	return Start(t, o...).NewDatabase(t)
}

// binDir finds the directory of initdb and postgres: the newest Debian
// version, else PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or on PATH")
}

// version is the major version in a /usr/lib/postgresql/<v>/bin path.
func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// credential is nil when not root, else the "postgres" user's (created if
// missing), since PostgreSQL refuses to run as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("running as root and there is no postgres user to run PostgreSQL as; useradd: %v: %s", err, out)
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// waitReady polls until url accepts connections, the server exits, or
// the deadline passes.
func waitReady(url string, exited <-chan error, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case e := <-exited:
			return fmt.Errorf("postgres exited: %v", e)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", within, err)
		}
	}
}

// stop asks postgres for a fast shutdown and kills it after 10 s.
func stop(cmd *exec.Cmd, exited <-chan error) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}
