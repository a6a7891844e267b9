package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/flowedge/flowedge/internal/testutil"
)

// bootstrapKey is the api-flow admin key every backend creates at start
// (FLOW_BOOTSTRAP_KEY) and the load sends as its bearer token.
const bootstrapKey = "e2e-bootstrap-key-0123456789"

// partitions is the partition count every stack starts with: three
// backends, as `make run` and the Helm chart.
const partitions = 3

// stackOptions shape one scenario's stack. The zero value is the default
// edge (relay, 300 ms relay timeout, 1 GiB queue) in front of three
// correctly configured backends.
type stackOptions struct {
	respond        string        // "relay" (default) or "accept"
	relayTimeout   time.Duration // default 300ms: keeps clients moving while a backend is down
	maxBytes       int64         // [buffer] max_bytes; 0 = the edge's default (1 GiB)
	proxied        int           // backend put behind an in-process toxiproxy: its index + 1 (0 = none)
	partitionsOf   map[int]int   // -partitions given to backend N when it is not 3 (a misconfigured backend)
	order          []int         // the edge's backend list: order[n] is the backend it names for partition n; nil = 0, 1, 2…
	backendTimeout time.Duration // [backends] timeout per attempt; default 2s
}

// stack is a running scenario: api-flow backends (three unless the
// scenario adds one) and one edge, all real processes on loopback with data
// under one temp dir.
type stack struct {
	t        *testing.T
	bins     binaries
	dir      string
	opt      stackOptions
	count    int // the edge's [partition] count: backends[0:count] are its backends; partitions unless resized
	backends []*backend
	edge     *edgeRun
	cfgPath  string
	proxy    *toxiproxy.Proxy // nil unless opt.proxied
	client   *http.Client     // for admin calls and reading backends
}

// backend is api-flow-N: its address stays the same across restarts so the
// edge's configuration stays true.
type backend struct {
	index      int
	addr       string // host:port, fixed after the first start
	dataDir    string
	partitions int    // the -partitions it runs with
	metrics    string // host:port of its -metrics-listen, set at each start
	proc       *proc
}

// edgeRun is the edge process with the addresses it listens on (fixed after
// the first start, so clients reach every restart at the same URL).
type edgeRun struct {
	proc              *proc
	public, admin     string
	startedAt         time.Time
	startupToListened time.Duration
}

func newStack(t *testing.T, bins binaries, opt stackOptions) *stack {
	t.Helper()
	if opt.respond == "" {
		opt.respond = "relay"
	}
	if opt.relayTimeout == 0 {
		opt.relayTimeout = 300 * time.Millisecond
	}
	if opt.backendTimeout == 0 {
		opt.backendTimeout = 2 * time.Second
	}
	s := &stack{t: t, bins: bins, dir: t.TempDir(), opt: opt, count: partitions,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs()
		}
	})
	for n := range partitions {
		m, ok := opt.partitionsOf[n]
		if !ok {
			m = partitions
		}
		s.addBackend(m)
	}
	if opt.proxied > 0 {
		s.startProxy(opt.proxied - 1)
	}
	s.startEdge()
	return s
}

// dumpLogs logs the last lines of every process of the stack.
func (s *stack) dumpLogs() {
	for _, b := range s.backends {
		if b.proc != nil {
			s.t.Logf("api-flow-%d (last lines of %s):\n%s", b.index, s.logPath(fmt.Sprintf("api-flow-%d", b.index)), b.proc.logTail())
		}
	}
	if s.edge != nil {
		s.t.Logf("edge (last lines):\n%s", s.edge.proc.logTail())
	}
}

func (s *stack) logPath(name string) string { return filepath.Join(s.dir, name+".log") }

// addBackend starts one more backend, api-flow-N with N the number of
// backends so far, on a free port and a new data dir with partitions as its
// -partitions, and returns N. The edge is not told of it until the stack's
// count covers it (resize) and the edge is started again.
func (s *stack) addBackend(partitions int) int {
	s.t.Helper()
	n := len(s.backends)
	s.backends = append(s.backends, &backend{index: n, addr: freeAddr(s.t),
		dataDir: filepath.Join(s.dir, fmt.Sprintf("api-flow-%d", n)), partitions: partitions})
	s.startBackend(n)
	return n
}

// resize sets the edge's [partition] count for its next start (startEdge),
// with backends 0..count-1 as its backend URLs.
func (s *stack) resize(count int) {
	s.t.Helper()
	if count < 1 || count > len(s.backends) {
		s.t.Fatalf("resize to %d partitions: the stack has %d backends", count, len(s.backends))
	}
	s.count = count
}

// startBackend starts api-flow-N on its address (a free port the first
// time), its data dir and its partition count.
func (s *stack) startBackend(n int) {
	s.t.Helper()
	b := s.backends[n]
	var listened, metrics string
	ready := func(line []byte) bool {
		var m struct {
			Msg, Addr   string
			MetricsAddr string `json:"metrics_addr"`
		}
		if json.Unmarshal(line, &m) == nil && m.Msg == "listening" {
			listened, metrics = m.Addr, m.MetricsAddr
			return true
		}
		return false
	}
	b.proc = startProc(s.t, fmt.Sprintf("api-flow-%d", n), s.logPath(fmt.Sprintf("api-flow-%d", n)),
		// The load shares one API key; api-flow's per-key rate limit
		// (100/min by default) is lifted so that it measures the edge, not
		// the limiter. Set through the environment, which api ignores if it
		// has no such setting.
		[]string{"FLOW_BOOTSTRAP_KEY=" + bootstrapKey, "HOSTNAME=", "FLOW_RATE_LIMIT_DEFAULT=1000000/s"}, ready, 30*time.Second,
		s.bins.api, "-listen", b.addr, "-partition", strconv.Itoa(n), "-partitions", strconv.Itoa(b.partitions),
		"-data-dir", b.dataDir, "-shutdown-timeout", "10s", "-metrics-listen", "127.0.0.1:0")
	b.addr, b.metrics = listened, metrics // written before ready closed the channel startProc waited on
}

// restartBackend starts api-flow-N again on the same address and data
// dir, with partitions as its -partitions.
func (s *stack) restartBackend(n, partitions int) {
	s.t.Helper()
	b := s.backends[n]
	if !b.proc.exited() {
		s.t.Fatalf("api-flow-%d is still running", n)
	}
	b.partitions = partitions
	s.startBackend(n)
}

func (b *backend) url() string { return "http://" + b.addr }

// startProxy puts backend n behind a toxiproxy proxy run in the test
// process; the edge is configured with the proxy's address.
func (s *stack) startProxy(n int) {
	s.t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, fmt.Sprintf("api-flow-%d", n), "127.0.0.1:0", s.backends[n].addr)
	if err := p.Start(); err != nil {
		s.t.Fatalf("toxiproxy: %v", err)
	}
	s.t.Cleanup(p.Stop)
	s.proxy = p
}

// backendURL is where the edge reaches partition n: the backend, or the
// proxy in front of it.
func (s *stack) backendURL(n int) string {
	if s.proxy != nil && s.opt.proxied-1 == n {
		return "http://" + s.proxy.Listen
	}
	return s.backends[n].url()
}

// writeEdgeConfig writes the edge's TOML for the given listen addresses.
func (s *stack) writeEdgeConfig(public, admin string) {
	s.t.Helper()
	urls := make([]string, s.count)
	for n := range s.count {
		b := n
		if n < len(s.opt.order) {
			b = s.opt.order[n]
		}
		urls[n] = strconv.Quote(s.backendURL(b))
	}
	protocol, pipeline := s.bins.protocol, 1
	switch protocol {
	case "":
		protocol = "request"
	case "pipeline":
		protocol, pipeline = "request", 8
	}
	maxBytes := ""
	if s.opt.maxBytes > 0 {
		maxBytes = fmt.Sprintf("max_bytes = %d", s.opt.maxBytes)
	}
	// Probes and backoff are tighter than the defaults so that a fault's
	// end is noticed in well under a second; the breaker cooldown is 2 s
	// instead of 1 min for the same reason. Nothing else differs from the
	// reference configs/edge.toml.
	cfg := fmt.Sprintf(`# written by the e2e suite
[server]
address = %q
respond = %q
relay_timeout = %q
shutdown_timeout = "20s"

[admin]
address = %q

[partition]
count = %d

[backends]
urls = [%s]
probe_interval = "200ms"
timeout = %q
breaker_cooldown = "2s"
pipeline = %d

[buffer]
path = %q
%s

[retry]
initial_backoff = "50ms"
max_backoff = "1s"

[delivery]
protocol = %q

[log]
level = "info"
format = "json"
`, public, s.opt.respond, s.opt.relayTimeout.String(), admin, s.count, strings.Join(urls, ", "),
		s.opt.backendTimeout.String(), pipeline, filepath.Join(s.dir, "edge-buffer"), maxBytes, protocol)
	s.cfgPath = filepath.Join(s.dir, "edge.toml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// startEdge starts the edge: on free ports the first time, then on the
// same ports and buffer dir.
func (s *stack) startEdge() {
	s.t.Helper()
	var public, admin string
	if s.edge == nil {
		public, admin = freeAddr(s.t), freeAddr(s.t)
	} else {
		if !s.edge.proc.exited() {
			s.t.Fatal("the edge is still running")
		}
		public, admin = s.edge.public, s.edge.admin
	}
	s.writeEdgeConfig(public, admin)
	var line struct{ Msg, Public, Admin string }
	ready := func(b []byte) bool {
		return json.Unmarshal(b, &line) == nil && line.Msg == "edge started"
	}
	start := time.Now()
	p := startProc(s.t, "edge", s.logPath("edge"), nil, ready, 30*time.Second, s.bins.edge, "run", "-config", s.cfgPath)
	s.edge = &edgeRun{proc: p, public: line.Public, admin: line.Admin, startedAt: start, startupToListened: time.Since(start)}
}

// publicURL is the edge's public base URL.
func (s *stack) publicURL() string { return "http://" + s.edge.public }

// fetchJSON GETs url (with the bootstrap key and, if set, X-Process-ID)
// and decodes a 200 answer into out. It returns the status.
func (s *stack) fetchJSON(url, pid string, out any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+bootstrapKey)
	if pid != "" {
		req.Header.Set("X-Process-ID", pid)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return 0, fmt.Errorf("GET %s: %w in %q", url, err, body)
		}
	}
	return resp.StatusCode, nil
}

// getJSON is fetchJSON failing the test on a transport or decoding error.
func (s *stack) getJSON(url, pid string, out any) int {
	s.t.Helper()
	code, err := s.fetchJSON(url, pid, out)
	if err != nil {
		s.t.Fatal(err)
	}
	return code
}

// partitionView is one entry of GET /edge/v1/partitions.
type partitionView struct {
	Partition   int    `json:"partition"`
	Backend     string `json:"backend"`
	Ready       bool   `json:"ready"`
	Breaker     string `json:"breaker"`
	Queued      int    `json:"queued"`
	InFlight    int    `json:"in_flight"`
	DeadLetters int    `json:"dead_letters"`
	// Misconfigured: the backend claims another partition or count
	// (X-Partition, Claim) than the edge maps it to.
	Misconfigured bool   `json:"misconfigured"`
	Claim         string `json:"claim"`
}

func (s *stack) partitionViews() []partitionView {
	s.t.Helper()
	var v struct {
		Partitions []partitionView `json:"partitions"`
	}
	if code := s.getJSON("http://"+s.edge.admin+"/edge/v1/partitions", "", &v); code != http.StatusOK {
		s.t.Fatalf("GET /edge/v1/partitions: %d", code)
	}
	return v.Partitions
}

// queued is the number of records the edge holds: `queued` counts every
// stored record, those in flight included.
func (s *stack) queued() int {
	n := 0
	for _, p := range s.partitionViews() {
		n += p.Queued
	}
	return n
}

// settled tells whether the edge holds no record and has no attempt in
// flight.
func (s *stack) settled() bool {
	for _, p := range s.partitionViews() {
		if p.Queued+p.InFlight > 0 {
			return false
		}
	}
	return true
}

// waitDrained waits until the edge's queue holds nothing and no attempt
// is in flight: everything it accepted reached a final outcome.
func (s *stack) waitDrained(timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	waitFor(s.t, timeout, "the edge to drain its queue (GET /edge/v1/partitions: queued = in_flight = 0)", s.settled)
	return time.Since(start)
}

// deadLetter is one entry of GET /edge/v1/dead-letters.
type deadLetter struct {
	ID             string `json:"id"`
	Partition      int    `json:"partition"`
	Key            string `json:"key"`
	Reason         string `json:"reason"`
	ResponseStatus int    `json:"response_status"`
}

func (s *stack) deadLetters() []deadLetter {
	s.t.Helper()
	var out []deadLetter
	cursor := ""
	for range 100 {
		var v struct {
			DeadLetters []deadLetter `json:"dead_letters"`
			NextCursor  string       `json:"next_cursor"`
		}
		url := "http://" + s.edge.admin + "/edge/v1/dead-letters?limit=1000"
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		if code := s.getJSON(url, "", &v); code != http.StatusOK {
			s.t.Fatalf("GET /edge/v1/dead-letters: %d", code)
		}
		out = append(out, v.DeadLetters...)
		if v.NextCursor == "" {
			return out
		}
		cursor = v.NextCursor
	}
	s.t.Fatal("GET /edge/v1/dead-letters: more than 100 pages")
	return nil
}

// replay asks the edge to deliver dead letter id again.
func (s *stack) replay(id string) {
	s.t.Helper()
	resp, err := s.client.Post("http://"+s.edge.admin+"/edge/v1/dead-letters/"+id+"/replay", "application/json", nil)
	if err != nil {
		s.t.Fatalf("replay %s: %v", id, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		s.t.Fatalf("POST /edge/v1/dead-letters/%s/replay: %d %s", id, resp.StatusCode, body)
	}
}

// route asks the edge binary which partition owns each key:
// `edge route -config F KEY...`.
func (s *stack) route(keys []string) map[string]int {
	s.t.Helper()
	out := make(map[string]int, len(keys))
	const batch = 200 // keep the command line short
	for i := 0; i < len(keys); i += batch {
		part := keys[i:min(i+batch, len(keys))]
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(s.bins.edge, append([]string{"route", "-config", s.cfgPath}, part...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			s.t.Fatalf("edge route: %v\n%s", err, stderr.String())
		}
		for line := range strings.Lines(stdout.String()) {
			// key=K partition=P backend=URL
			fields := strings.Fields(line)
			if len(fields) != 3 {
				s.t.Fatalf("edge route printed %q", line)
			}
			key := strings.TrimPrefix(fields[0], "key=")
			p, err := strconv.Atoi(strings.TrimPrefix(fields[1], "partition="))
			if err != nil || !strings.HasPrefix(fields[2], "backend="+s.backendURL(p)) {
				s.t.Fatalf("edge route printed %q", line)
			}
			out[key] = p
		}
	}
	if len(out) != len(keys) {
		s.t.Fatalf("edge route answered for %d of %d keys", len(out), len(keys))
	}
	return out
}

// addToxic adds a toxic to the proxy from its JSON description (the
// toxiproxy HTTP API's format).
func (s *stack) addToxic(spec string) {
	s.t.Helper()
	if _, err := s.proxy.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
		s.t.Fatalf("toxic %s: %v", spec, err)
	}
}

func (s *stack) removeToxic(name string) {
	s.t.Helper()
	if err := s.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
		s.t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// killBackend SIGKILLs api-flow-N and waits for it to be gone.
func (s *stack) killBackend(n int) {
	s.t.Helper()
	p := s.backends[n].proc
	p.signal(s.t, syscall.SIGKILL)
	p.wait(s.t, 10*time.Second)
}

// metricSum scrapes url (Prometheus text format) and sums the samples of
// metric, but those containing exclude (`outcome="ok"`) if it is not
// empty. A metric not exposed sums to 0.
func (s *stack) metricSum(url, metric, exclude string) float64 {
	s.t.Helper()
	return s.metricSumWhere(url, metric, func(sample string) bool { return exclude == "" || !strings.Contains(sample, exclude) })
}

// metricSumWhere scrapes url (Prometheus text format) and sums the samples
// of metric for which keep holds (given the whole sample line).
func (s *stack) metricSumWhere(url, metric string, keep func(sample string) bool) float64 {
	s.t.Helper()
	resp, err := s.client.Get(url)
	if err != nil {
		s.t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	sum := 0.0
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		if !keep(line) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			s.t.Fatalf("%s: bad sample %q", url, line)
		}
		sum += v
	}
	return sum
}

// failedAttempts is the number of delivery attempts that did not succeed
// at once (retried, misrouted or failed) since the edge's last start.
func (s *stack) failedAttempts() int {
	return int(s.metricSum("http://"+s.edge.admin+"/metrics", "edge_delivery_attempts_total", `outcome="ok"`))
}

// health is the edge's GET /health/health: its status code and body.
func (s *stack) health() (int, string) {
	s.t.Helper()
	resp, err := s.client.Get("http://" + s.edge.admin + "/health/health")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// misroutedAttempts is the number of delivery attempts a backend refused
// with 421 (it does not own the key) since the edge's last start.
func (s *stack) misroutedAttempts() int {
	return int(s.metricSumWhere("http://"+s.edge.admin+"/metrics", "edge_delivery_attempts_total",
		func(sample string) bool { return strings.Contains(sample, `outcome="misrouted"`) }))
}

// backendDedupes is the number of requests the backends answered from a
// stored answer (a repeated X-Request-ID or Idempotency-Key) since each
// one's last start: redeliveries whose effect was not repeated.
func (s *stack) backendDedupes() int {
	n := 0.0
	for _, b := range s.backends {
		n += s.metricSum("http://"+b.metrics+"/metrics", "flow_idempotent_replays_total", "")
	}
	return int(n)
}

// freeAddr is a loopback address free a moment ago that a process can
// listen on again after a restart (see testutil.FreePort).
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}
