package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/testutil"
)

// backend is a real HTTP server standing in for api-flow-N: it dedupes by
// X-Request-ID (as the real backend does) and records, per key, the order
// in which effects happened.
type backend struct {
	t    *testing.T
	name string
	addr string

	mu       sync.Mutex
	srv      *http.Server
	hits     map[string]int      // X-Request-ID → times received
	applied  map[string]bool     // X-Request-ID → took effect (dedupe)
	effects  map[string][]int    // key → body numbers, first receipt only
	attempts map[string][]string // X-Request-ID → X-Edge-Attempt values
	headers  map[string]http.Header
	uris     map[string]string                                          // X-Request-ID → request target as received
	batches  int                                                        // batch requests served
	batch    bool                                                       // serve POST /_edge/batch (the edge's batch delivery)
	claim    string                                                     // X-Partition of the readiness answer; "" = none
	probes   int                                                        // readiness probes answered
	answer   func(w http.ResponseWriter, r *http.Request, hit int) bool // optional: true = answered
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	// A port outside the ephemeral range, so that restart can listen on it
	// again (see testutil.FreePort).
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{t: t, name: name, addr: ln.Addr().String(), hits: map[string]int{}, applied: map[string]bool{},
		effects: map[string][]int{}, attempts: map[string][]string{}, headers: map[string]http.Header{},
		uris: map[string]string{}}
	b.serve(ln)
	t.Cleanup(b.stop)
	return b
}

func (b *backend) url() string { return "http://" + b.addr }

func (b *backend) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(b.handle)}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go srv.Serve(ln)
}

// stop closes the listener and every connection: the backend is gone.
func (b *backend) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// restart listens again on the same address. It returns an error rather
// than failing the test, so that a goroutine other than the test's may call
// it (t.Fatal must not be called from another goroutine).
func (b *backend) restart() error {
	ln, err := relisten(b.addr)
	if err != nil {
		return err
	}
	b.serve(ln)
	return nil
}

// relisten listens on addr again, retrying for a while: the port may linger
// a moment after close.
func relisten(addr string) (net.Listener, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("relisten %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *backend) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health/readiness" {
		b.mu.Lock()
		b.probes++
		if b.claim != "" {
			w.Header().Set("X-Partition", b.claim)
		}
		b.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return
	}
	if r.URL.Path == "/_edge/batch" {
		b.mu.Lock()
		on := b.batch
		if on {
			b.batches++
		}
		b.mu.Unlock()
		if !on {
			http.NotFound(w, r)
			return
		}
		serveBatch(b.t, w, r, http.HandlerFunc(b.handle))
		return
	}
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("X-Request-ID")
	key := r.Header.Get("X-Process-ID")
	b.mu.Lock()
	b.hits[id]++
	hit := b.hits[id]
	b.attempts[id] = append(b.attempts[id], r.Header.Get("X-Edge-Attempt"))
	b.headers[id] = r.Header.Clone()
	b.uris[id] = r.RequestURI
	answer := b.answer
	b.mu.Unlock()
	if answer != nil && answer(w, r, hit) {
		return
	}
	n, _ := strconv.Atoi(strings.TrimPrefix(string(body), key+":"))
	b.mu.Lock()
	if !b.applied[id] {
		b.applied[id] = true
		b.effects[key] = append(b.effects[key], n)
	}
	b.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("X-Backend", b.name)
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "%s took %s", b.name, body)
}

func (b *backend) setAnswer(f func(w http.ResponseWriter, r *http.Request, hit int) bool) {
	b.mu.Lock()
	b.answer = f
	b.mu.Unlock()
}

// setClaim sets the partition claim of the readiness answer ("N/M"; "" =
// none).
func (b *backend) setClaim(claim string) {
	b.mu.Lock()
	b.claim = claim
	b.mu.Unlock()
}

// probeCount is how many readiness probes the backend answered.
func (b *backend) probeCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.probes
}

// hitCount is how many requests other than readiness probes arrived.
func (b *backend) hitCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, h := range b.hits {
		n += h
	}
	return n
}

func (b *backend) effectCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, e := range b.effects {
		n += len(e)
	}
	return n
}

// testConfig is a valid config for backends on loopback and a fresh buffer.
func testConfig(t *testing.T, backends ...*backend) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Address = "127.0.0.1:0"
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Partition.Count = len(backends)
	cfg.Backends.URLs = nil
	for _, b := range backends {
		cfg.Backends.URLs = append(cfg.Backends.URLs, b.url())
	}
	cfg.Backends.ProbeInterval = config.Duration{Duration: 100 * time.Millisecond}
	cfg.Backends.Timeout = config.Duration{Duration: 2 * time.Second}
	// Flake fixed: with the default 2 s relay timeout a stalled CI machine
	// answered 202 where a test expects the relayed answer. Tests that want
	// a 202 from the timeout set a short one themselves.
	cfg.Server.RelayTimeout = config.Duration{Duration: 20 * time.Second}
	cfg.Buffer.Path = t.TempDir()
	cfg.Retry.InitialBackoff = config.Duration{Duration: 10 * time.Millisecond}
	cfg.Retry.MaxBackoff = config.Duration{Duration: 200 * time.Millisecond}
	return cfg
}

func startEdge(t *testing.T, cfg config.Config) *Edge {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	e, err := Start(context.Background(), cfg, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

// send sends one request to the edge's public listener; it fails the test
// on a transport error, so only the test's goroutine may call it (others
// use exchange).
func send(t *testing.T, e *Edge, method, path, key, body string, hdr map[string]string) *http.Response {
	t.Helper()
	resp, err := trySend(e, method, path, key, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func trySend(e *Edge, method, path, key, body string, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+e.PublicAddr+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("X-Process-ID", key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

// readBody reads and closes resp's body; like send, for the test's
// goroutine only.
func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := tryReadBody(resp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tryReadBody(resp *http.Response) (string, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read answer: %w", err)
	}
	return string(b), nil
}

// exchange is send and readBody returning an error instead of failing the
// test: for goroutines other than the test's, which report with t.Error and
// stop.
func exchange(e *Edge, method, path, key, body string, hdr map[string]string) (*http.Response, string, error) {
	resp, err := trySend(e, method, path, key, body, hdr)
	if err != nil {
		return nil, "", err
	}
	b, err := tryReadBody(resp)
	return resp, b, err
}

// owner returns which backend must own key.
func owner(key string, backends []*backend) *backend {
	return backends[partition.OfString(key, len(backends))]
}
