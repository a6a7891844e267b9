package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/api/store/pgstore"
	"github.com/flowedge/flowedge/internal/testutil/pgtest"
	"github.com/prometheus/client_golang/prometheus"
)

// adminKey is the bootstrap secret of every test server.
const adminKey = "test-admin-key-0123456789"

// env is a real API server: a Badger store in a temp dir behind an
// httptest server on loopback.
type env struct {
	t      testing.TB
	dir    string
	opts   api.Options // as given, before defaults
	store  api.Store
	srv    *api.Server
	ts     *httptest.Server
	logs   *syncBuffer
	client *http.Client
	closed bool
	// open opens the store at each start; nil means Badger in dir.
	open func() (api.Store, error)
}

// newEnv starts a server on a Badger store; mods adjust its options.
func newEnv(t testing.TB, mods ...func(*api.Options)) *env {
	t.Helper()
	return newEnvOn(t, nil, mods...)
}

// newPGEnv starts a server on a PostgreSQL store (a throwaway server).
func newPGEnv(t testing.TB, mods ...func(*api.Options)) *env {
	t.Helper()
	return newPGEnvWith(t, pgtest.Options{}, mods...)
}

// newPGEnvWith is newPGEnv on a server started with o.
func newPGEnvWith(t testing.TB, o pgtest.Options, mods ...func(*api.Options)) *env {
	t.Helper()
	url := pgtest.DB(t, o)
	return newEnvOn(t, func() (api.Store, error) { return pgstore.Open(context.Background(), url, pgstore.Options{}) }, mods...)
}

// newEnvOn starts a server on the store open opens (nil: Badger).
func newEnvOn(t testing.TB, open func() (api.Store, error), mods ...func(*api.Options)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), logs: &syncBuffer{}, open: open}
	// Limits far above what tests send; tests of the limits set their own.
	lots := api.Rate{Count: 1_000_000, Per: time.Minute}
	// Flake: health checks bounded by DefaultCheckTimeout (50 ms) failed when a
	// loaded machine stalled that long; tests of the timeouts set their own.
	const patient = 5 * time.Second
	e.opts = api.Options{BootstrapKey: adminKey, Version: "test-1.0", Workers: 4,
		RateLimits: api.RateLimits{Default: lots, Posts: lots, Webhooks: lots, Keys: lots},
		Health:     api.HealthOptions{DatabaseTimeout: patient, StorageTimeout: patient, QueueTimeout: patient, ReadinessTimeout: patient}}
	for _, m := range mods {
		m(&e.opts)
	}
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *env) start() {
	e.t.Helper()
	open := e.open
	if open == nil {
		open = func() (api.Store, error) { return api.OpenBadger(e.dir, api.BadgerOptions{}) }
	}
	store, err := open()
	if err != nil {
		e.t.Fatal(err)
	}
	o := e.opts
	o.Store = store
	o.Registry = prometheus.NewRegistry()
	o.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.DataDir == "" {
		o.DataDir = e.dir
	}
	srv, err := api.New(o)
	if err != nil {
		store.Close()
		e.t.Fatal(err)
	}
	e.store, e.srv, e.opts.Registry = store, srv, o.Registry
	e.ts = httptest.NewServer(srv.Handler())
	e.closed = false
}

// stop shuts the server down as cmd/api does on SIGTERM.
func (e *env) stop() {
	if e.closed {
		return
	}
	e.closed = true
	e.ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Close(ctx); err != nil {
		e.t.Error(err)
	}
	if err := e.store.Close(); err != nil {
		e.t.Error(err)
	}
	e.client.CloseIdleConnections()
}

// metrics scrapes the server's metrics handler (the -metrics-listen port
// of cmd/api, not the public one).
func (e *env) metrics() string {
	e.t.Helper()
	ts := httptest.NewServer(e.srv.MetricsHandler())
	defer ts.Close()
	res, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		e.t.Fatalf("metrics: %d %v", res.StatusCode, err)
	}
	return string(b)
}

// restart stops the server and starts a new one on the same directory.
func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// resp is an answer, read whole.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// req is a request to make: Key is the API key ("" for none).
type req struct {
	method, path string
	body         any // []byte/string sent as is, else JSON-encoded
	key          string
	header       map[string]string
}

func (e *env) do(r req) resp {
	e.t.Helper()
	out, err := e.try(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// try is do for goroutines: it returns the error instead of failing.
func (e *env) try(r req) (resp, error) {
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return resp{}, err
		}
		body = bytes.NewReader(j)
	}
	hr, err := http.NewRequest(r.method, e.ts.URL+r.path, body)
	if err != nil {
		return resp{}, err
	}
	if r.key != "" {
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := e.client.Do(hr)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}, err
}

// must fails the test unless r has the status want.
func must(t testing.TB, r resp, want int) resp {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// checkProblem checks that r is an RFC 9457 problem with status want and
// returns its members.
func checkProblem(t testing.TB, r resp, want int) map[string]any {
	t.Helper()
	must(t, r, want)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	var p map[string]any
	r.json(t, &p)
	for _, k := range []string{"type", "title", "status", "detail", "request_id"} {
		if _, ok := p[k]; !ok {
			t.Fatalf("problem lacks %q: %s", k, r.body)
		}
	}
	if int(p["status"].(float64)) != want {
		t.Fatalf("problem status %v, want %d", p["status"], want)
	}
	if p["request_id"] != r.header.Get("X-Request-ID") || p["request_id"] == "" {
		t.Fatalf("problem request_id %v, header %q", p["request_id"], r.header.Get("X-Request-ID"))
	}
	return p
}

// waitFor polls cond until it holds, failing after 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// job reads a job.
func (e *env) job(id string) api.Job {
	e.t.Helper()
	var j api.Job
	must(e.t, e.do(req{method: "GET", path: "/jobs/" + id, key: adminKey}), 200).json(e.t, &j)
	return j
}

// waitJob waits until job id has status want (failing early on another
// final status) and returns it.
func (e *env) waitJob(id, want string) api.Job {
	e.t.Helper()
	var j api.Job
	waitFor(e.t, "job "+id+" "+want, func() bool {
		j = e.job(id)
		if j.Status != want && (j.Status == api.JobSucceeded || j.Status == api.JobFailed || j.Status == api.JobCancelled) {
			e.t.Fatalf("job %s ended %s (%s), want %s", id, j.Status, j.Error, want)
		}
		return j.Status == want
	})
	return j
}

// workflow creates a workflow of steps and returns its id.
func (e *env) workflow(steps ...map[string]any) string {
	e.t.Helper()
	var w api.Workflow
	must(e.t, e.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey,
		body: map[string]any{"name": "wf", "steps": steps}}), 201).json(e.t, &w)
	return w.ID
}

// submit submits a job of workflow wf for process pid.
func (e *env) submit(pid, wf string, input any) api.Job {
	e.t.Helper()
	var j api.Job
	must(e.t, e.do(req{method: "POST", path: "/jobs", key: adminKey, header: map[string]string{"X-Process-ID": pid},
		body: map[string]any{"workflow_id": wf, "input": input}}), 201).json(e.t, &j)
	return j
}

// events lists the events of pid.
func (e *env) events(pid string) []api.Event {
	e.t.Helper()
	var l struct {
		Items []api.Event `json:"items"`
	}
	must(e.t, e.do(req{method: "GET", path: "/api/v1/processes/" + pid + "/events?limit=1000", key: adminKey}), 200).json(e.t, &l)
	return l.Items
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
