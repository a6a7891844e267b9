// Package testutil holds the small pieces the throwaway test servers
// (pgtest, redistest, s3test, azuritetest) and the e2e tests share: a free
// loopback port, a buffer a process writes its output to while a test reads
// it, and the start, wait and stop of a server process; and the process's
// CPU time, which benchmarks report per operation.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CPUTime is the process's user + system CPU time so far (getrusage).
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FreePort returns a loopback port free a moment ago, below the kernel's
// ephemeral range, so that a process can listen on it again after a restart:
// a port from the ephemeral range (what listening on port 0 gives) can be
// taken meanwhile as the local end of any outgoing connection on the
// machine, and the restarted process then fails with "address already in
// use" (an e2e power-cut test did, once).
func FreePort() (int, error) {
	lo := ephemeralLow()
	var last error
	for range 100 {
		port := minPort + rand.IntN(lo-minPort)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			last = err
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free port below %d: %w", lo, last)
}

// minPort is the lowest port FreePort returns, above the usual services'.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), or Linux's default 32768.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= minPort+1000 {
		return 32768
	}
	return lo
}

// LockedBuffer is a bytes.Buffer safe for one writer (a process's output)
// and concurrent readers. The zero value is ready to use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Process is a throwaway server process (redistest, s3test, azuritetest):
// its output kept, killed with the test binary, stopped once.
type Process struct {
	cmd  *exec.Cmd
	out  LockedBuffer
	done chan struct{} // closed when the process has exited
	once sync.Once
}

// StartProcess starts cmd (name in errors), its output captured, and polls
// ready every 20 ms until it holds. It fails when the process exits first,
// or stops it and fails when ready does not hold within timeout.
func StartProcess(name string, cmd *exec.Cmd, timeout time.Duration, ready func(context.Context) bool) (*Process, error) {
	p := &Process{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if ready(ctx) {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited at start: %s", name, p.Output())
		case <-ctx.Done():
			p.Stop()
			return nil, fmt.Errorf("%s did not answer within %v: %s", name, timeout, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the process and waits until it has exited; safe to call twice.
func (p *Process) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

// Output is what the process has written so far.
func (p *Process) Output() string { return p.out.String() }

// RepoRoot is the nearest directory above the working directory that holds
// go.mod: where `make test-servers` puts the servers it builds (./bin).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repository root: %w", err)
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
