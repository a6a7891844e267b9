package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildOnce builds this command once per test binary run, for every test
// that runs the real binary (crash, validate, route).
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "edge-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "edge")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func edgeBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// sink is a backend that records every X-Request-ID it receives.
type sink struct {
	mu   sync.Mutex
	seen map[string]int
}

func newSink(t *testing.T) (*sink, *httptest.Server) {
	s := &sink{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health/readiness" {
			return
		}
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.seen[r.Header.Get("X-Request-ID")]++
		s.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	return s, srv
}

// edgeProc is a running edge binary.
type edgeProc struct {
	cmd        *exec.Cmd
	publicAddr string
	adminAddr  string
	done       chan struct{} // closed when the process has exited
	err        error         // its exit error, set before done closes
}

// startEdgeProc runs `edge run -config cfg` and waits for its "edge started" log line.
func startEdgeProc(t *testing.T, cfgPath string) *edgeProc {
	t.Helper()
	cmd := exec.Command(edgeBinary(t), "run", "-config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &edgeProc{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg    string `json:"msg"`
				Public string `json:"public"`
				Admin  string `json:"admin"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "edge started" {
				p.publicAddr, p.adminAddr = line.Public, line.Admin
				close(started)
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	select {
	case <-started:
	case <-p.done:
		t.Fatalf("edge exited before it started: %v", p.err)
	case <-time.After(30 * time.Second):
		t.Fatal("edge did not start within 30 s")
	}
	return p
}

func writeConfig(t *testing.T, dir, backendURL, respond string) string {
	t.Helper()
	cfg := fmt.Sprintf(`
[server]
address = "127.0.0.1:0"
respond = %q
relay_timeout = "500ms"

[admin]
address = "127.0.0.1:0"

[partition]
count = 3

[backends]
urls = [%q, %q, %q]
probe_interval = "100ms"

[buffer]
path = %q

[retry]
initial_backoff = "10ms"
max_backoff = "200ms"
`, respond, backendURL, backendURL, backendURL, filepath.Join(dir, "buffer"))
	path := filepath.Join(dir, "edge.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// load sends POSTs from n clients until stop closes and records every
// delivery id the edge acknowledged (202 or a relayed 2xx).
func load(addr string, n int, stop <-chan struct{}, acked *sync.Map, count *atomic.Int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 5 * time.Second}
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", "http://"+addr+"/events", strings.NewReader(strings.Repeat("x", 300)))
				req.Header.Set("X-Process-ID", fmt.Sprintf("p-%d-%d", g, i%13))
				resp, err := c.Do(req)
				if err != nil {
					continue // the edge died under us: this one was never acknowledged
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					acked.Store(resp.Header.Get("X-Delivery-ID"), true)
					count.Add(1)
				}
			}
		}()
	}
	return &wg
}

// TestCrashLosesNothing SIGKILLs the edge binary three times under
// concurrent load and restarts it on the same buffer: every request whose
// client got a success answer is delivered.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the edge binary")
	}
	s, backend := newSink(t)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, backend.URL, "accept")
	var acked sync.Map
	var count atomic.Int64
	for round := 1; round <= 3; round++ {
		p := startEdgeProc(t, cfgPath)
		stop := make(chan struct{})
		before := count.Load()
		wg := load(p.publicAddr, 16, stop, &acked, &count)
		// Flake guard: this waited for 500 acknowledgements with no deadline,
		// so an edge that died or stalled hung the test until go test's
		// timeout. The deadline only bounds a hang.
		deadline := time.Now().Add(60 * time.Second)
		for count.Load() < before+500 {
			select {
			case <-p.done:
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: edge exited under load: %v", round, p.err)
			default:
			}
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: %d of 500 requests acknowledged within 60 s", round, count.Load()-before)
			}
			time.Sleep(5 * time.Millisecond)
		}
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		close(stop)
		wg.Wait()
		t.Logf("round %d: SIGKILL after %d acknowledged in all", round, count.Load())
	}
	p := startEdgeProc(t, cfgPath)
	missing := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		acked.Range(func(k, _ any) bool {
			if s.seen[k.(string)] == 0 {
				n++
			}
			return true
		})
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for missing() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged requests never delivered", missing(), count.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	dups := 0
	for _, n := range s.seen {
		if n > 1 {
			dups++
		}
	}
	s.mu.Unlock()
	t.Logf("%d acknowledged, all delivered; %d redelivered after a crash (the backend dedupes them)", count.Load(), dups)

	// A clean SIGTERM exits 0.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("SIGTERM: exit %v", p.err)
		}
	case <-time.After(35 * time.Second):
		t.Fatal("SIGTERM: still running after 35 s")
	}
}
