package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaries are the edge and api binaries of this checkout, built once for
// the whole suite.
type binaries struct {
	edge, api string
	// protocol is the [delivery] protocol of the edges run from these
	// binaries: "request" or "batch", or "pipeline" (request with
	// [backends] pipeline = 8); "" = the edge's default (request).
	protocol string
}

// buildBinaries builds cmd/edge and cmd/api into dir with the go tool that
// runs the tests.
func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the suite builds the binaries with the go tool, which is not on PATH: %v", err)
	}
	start := time.Now()
	cmd := exec.Command(gobin, "build", "-o", dir+string(filepath.Separator), "./cmd/edge", "./cmd/api")
	cmd.Dir = ".." // the module root; the tests run in e2e/
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/edge ./cmd/api: %v\n%s", err, out)
	}
	t.Logf("built edge and api in %s", time.Since(start).Round(100*time.Millisecond))
	return binaries{edge: filepath.Join(dir, "edge"), api: filepath.Join(dir, "api")}
}

// proc is one run of a binary in its own process group. Its stdout and
// stderr are appended to a log file; the last lines are kept in memory for
// failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped

	mu   sync.Mutex
	tail []string // the last tailLines log lines
}

const tailLines = 15

// startProc starts bin with args and env (added to the test's
// environment), appending its output to logPath. It returns once ready
// reports true for a log line, and fails the test if the process exits
// first or ready is not seen within timeout. A t.Cleanup SIGKILLs the
// process group whatever the test's outcome.
func startProc(t *testing.T, name, logPath string, env []string, ready func(line []byte) bool, timeout time.Duration, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "--- %s start %s: %s %s\n", name, time.Now().Format(time.RFC3339Nano), filepath.Base(bin), strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // signals go to the group; the test's own group is spared
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() { p.kill(t) })

	readyCh := make(chan struct{})
	go func() {
		defer close(p.done)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		isReady := false
		for sc.Scan() {
			line := sc.Bytes()
			logf.Write(line)
			logf.Write([]byte{'\n'})
			p.remember(string(line))
			if !isReady && ready(line) {
				isReady = true
				close(readyCh)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		fmt.Fprintf(logf, "--- %s exit %s: %v\n", name, time.Now().Format(time.RFC3339Nano), cmd.ProcessState)
	}()
	select {
	case <-readyCh:
	case <-p.done:
		t.Fatalf("%s exited before it was ready (%v); last log lines:\n%s", name, cmd.ProcessState, p.logTail())
	case <-time.After(timeout):
		t.Fatalf("%s not ready within %s; last log lines:\n%s", name, timeout, p.logTail())
	}
	return p
}

func (p *proc) remember(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.tail) == tailLines {
		copy(p.tail, p.tail[1:])
		p.tail = p.tail[:tailLines-1]
	}
	p.tail = append(p.tail, line)
}

func (p *proc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// signal sends sig to the process's group.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("%s: kill -%v: %v", p.name, sig, err)
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code (-1 for a signal).
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s still running %s after it was told to stop; last log lines:\n%s", p.name, timeout, p.logTail())
		return 0
	}
}

// kill SIGKILLs the process group (a stopped process dies too) and reaps
// the process. It is safe to call more than once.
func (p *proc) kill(t *testing.T) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) did not die within 10 s of SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// waitFor polls cond every 20 ms until it holds, failing the test with
// what after timeout. It is for real conditions of other processes (a
// count reached, a queue drained), never for a fixed pause.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
