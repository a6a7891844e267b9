package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ansi matches the terminal control sequences of a TUI's output (CSI,
// OSC, charset and keypad modes), so the screen can be read as text.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]`)

// screen collects what a program writes to its terminal.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ansi.ReplaceAllString(s.buf.String(), "")
}

// TestTopInTerminal runs `edge top` in a pseudo-terminal against a running
// edge binary and reads its partitions from the screen: one row per
// partition with its backend, "ready" and its queued count; q ends it with
// exit 0.
func TestTopInTerminal(t *testing.T) {
	_, srv := newSink(t)
	dir := t.TempDir()
	p := startEdgeProc(t, writeConfig(t, dir, srv.URL, "accept"))
	for i := range 5 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.publicAddr+"/events", strings.NewReader("x"))
		req.Header.Set("X-Process-ID", fmt.Sprintf("top-%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	cmd := exec.Command(edgeBinary(t), "top", "-admin", "http://"+p.adminAddr, "-interval", "200ms")
	cmd.Env = append(os.Environ(), "TERM=xterm-256color", "EDGE_ADMIN_TOKEN=")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 170})
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		tty.Close()
	})
	var scr screen
	go io.Copy(&scr, tty) // ends when the pty closes

	row := func(part int) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%d\s+%s\s+ready\s+closed\s+\d+`, part, regexp.QuoteMeta(srv.URL)))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		txt := scr.text()
		ok := strings.Contains(txt, "PART") && strings.Contains(txt, "BACKEND")
		for part := range 3 {
			ok = ok && row(part).MatchString(strings.ReplaceAll(txt, "\r", "\n"))
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge top never showed the three partitions; screen:\n%s", txt)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := tty.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("edge top exited %d after q; screen:\n%s", ee.ExitCode(), scr.text())
		} else if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("edge top did not exit after q")
	}
}
