// Command e2e measures the edge end to end against fronts and baselines run
// in the same minute on the same machine, so the figures are ratios, not
// absolutes. Every server is its own process; the load is wrk (-t1, 64
// connections, 300-byte POSTs to /api/v1/processes/{pid}/events with a
// random process id per request, X-Process-ID = pid); each front's CPU per
// request is read from /proc (its process and its children).
//
// Two sections:
//
//   - generic: three plain Go backends answering 201. Rows: a plain Go server
//     answering 202 (the HTTP ceiling of this machine), HAProxy and nginx
//     hashing X-Process-ID, httputil.ReverseProxy with 256 idle conns per
//     host, and the edge (request delivery) in accept mode, accept with its
//     backends down (intake only) and relay mode, then accept and relay
//     again with [backends] pipeline = 8.
//   - stack: three real api-flow backends (API key, rate limits raised)
//     appending events. HAProxy and nginx hash X-Process-ID, which is not
//     the edge's jump hash, so their api-flows run with -partitions 1 (each
//     owns every key; otherwise about two thirds of their answers would be
//     cheap 421s); the edge's run as partitions 0..2 of 3, as deployed. The
//     edge uses batch delivery. After each run the events stored at the
//     backends are counted and compared with the requests acknowledged.
//
// Needs wrk, haproxy and nginx on PATH (scripts/bench-deps.sh installs
// them). The edge and api binaries are built from ./cmd unless -edge-bin
// and -api-bin name them.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flowedge/flowedge/internal/partition"
)

const benchKey = "bench-key-0123456789abcdef"

func main() {
	role := flag.String("role", "", "internal: run as a child server (backend|plain|proxy)")
	listen := flag.String("listen", "", "internal: the child's listen address")
	upstreams := flag.String("upstreams", "", "internal: the proxy child's backends, comma-separated")
	duration := flag.Duration("duration", 10*time.Second, "length of each run")
	conns := flag.Int("connections", 64, "wrk connections")
	out := flag.String("out", "", "also write the markdown tables to this file")
	only := flag.String("only", "", "run one section only: generic | stack")
	edgeBin := flag.String("edge-bin", "", "edge binary (default: build ./cmd/edge)")
	apiBin := flag.String("api-bin", "", "api binary (default: build ./cmd/api)")
	flag.Parse()
	if *role != "" {
		serveRole(*role, *listen, strings.Split(*upstreams, ","))
		return
	}
	for _, tool := range []string{"wrk", "haproxy", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			log.Fatalf("%s is not on PATH: run scripts/bench-deps.sh (make bench does)", tool)
		}
	}
	tmp, err := os.MkdirTemp("", "flowedge-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	b := &bench{dir: tmp, d: *duration, conns: *conns, edge: *edgeBin, api: *apiBin}
	defer b.stopAll()
	if b.edge == "" || b.api == "" {
		b.build()
	}
	b.self, err = os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	b.script = filepath.Join(tmp, "post.lua")
	if err := os.WriteFile(b.script, []byte(wrkScript), 0o644); err != nil {
		log.Fatal(err)
	}

	var md strings.Builder
	if *only != "stack" {
		md.WriteString(b.generic())
	}
	if *only != "generic" {
		md.WriteString(b.stack())
	}
	fmt.Print(md.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// serveRole runs a child server until killed.
func serveRole(role, addr string, upstreams []string) {
	var h http.Handler
	switch role {
	case "backend": // a generic backend: reads the body, answers 201
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health/readiness" {
				return
			}
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"ok":true}`)
		})
	case "plain": // the HTTP ceiling: answers 202 at once
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"status":"queued"}`)
		})
	case "proxy": // httputil.ReverseProxy hashing X-Process-ID like the edge
		targets := make([]*url.URL, len(upstreams))
		for i, u := range upstreams {
			targets[i], _ = url.Parse(u)
		}
		h = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				p := partition.OfString(pr.In.Header.Get("X-Process-ID"), len(targets))
				pr.SetURL(targets[p])
			},
			Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
		}
	default:
		log.Fatalf("unknown role %q", role)
	}
	log.Fatal(http.ListenAndServe(addr, h))
}

// wrkScript posts 300-byte JSON events with a random process id each.
const wrkScript = `
local hex = "0123456789abcdef"
local body = '{"type":"bench","data":"' .. string.rep("x", 270) .. '"}'
local auth = "Bearer ` + benchKey + `"
local seeded = false
request = function()
  if not seeded then math.randomseed(os.time() + math.floor(os.clock() * 1e6)); seeded = true end
  local t = {}
  for i = 1, 16 do local n = math.random(1, 16); t[i] = hex:sub(n, n) end
  local pid = table.concat(t)
  return wrk.format("POST", "/api/v1/processes/" .. pid .. "/events",
    {["X-Process-ID"] = pid, ["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
end
`

type bench struct {
	dir, self, edge, api, script string
	d                            time.Duration
	conns                        int
	stops                        []func()
}

func (b *bench) build() {
	for _, c := range []struct {
		bin *string
		pkg string
	}{{&b.edge, "./cmd/edge"}, {&b.api, "./cmd/api"}} {
		if *c.bin != "" {
			continue
		}
		dst := filepath.Join(b.dir, filepath.Base(c.pkg))
		cmd := exec.Command("go", "build", "-o", dst, c.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			log.Fatalf("go build %s: %v", c.pkg, err)
		}
		*c.bin = dst
	}
}

func (b *bench) stopAll() {
	for i := len(b.stops) - 1; i >= 0; i-- {
		b.stops[i]()
	}
	b.stops = nil
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs a process until stopAll (SIGTERM, then SIGKILL) and returns it.
func (b *bench) start(name string, env []string, bin string, args ...string) *exec.Cmd {
	logf, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.stops = append(b.stops, func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		logf.Close()
	})
	return cmd
}

// waitHTTP waits until url answers 2xx.
func waitHTTP(url string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("%s not ready after 30s", url)
}

// waitListen waits until addr accepts connections.
func waitListen(addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Fatalf("%s not listening after 30s", addr)
}

// cpuTicks is the user+system CPU of pid and its children, in clock ticks
// (USER_HZ, 100 on Linux).
func cpuTicks(pid int) int64 {
	var total int64
	pids := []int{pid}
	if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, f := range strings.Fields(string(kids)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
	}
	for _, p := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(st)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 12 {
			u, _ := strconv.ParseInt(fields[11], 10, 64)
			k, _ := strconv.ParseInt(fields[12], 10, 64)
			total += u + k
		}
	}
	return total
}

// row is one measured run.
type row struct {
	name             string
	rps, p50, p99    float64
	requests, non2xx int64
	cpuPerReq        float64 // µs of the front's CPU per request; 0 = not measured
	stored           int64   // events stored at the backends afterwards; -1 = not counted
	acked            int64   // 2xx answers
	errors           string
}

// load runs wrk against target, measuring pid's CPU meanwhile.
func (b *bench) load(name, target string, pid int) row {
	before := cpuTicks(pid)
	out, err := exec.Command("wrk", "-t1", "-c"+strconv.Itoa(b.conns), "-d"+b.d.String(), "--latency", "-s", b.script, target).CombinedOutput()
	after := cpuTicks(pid)
	if err != nil {
		log.Fatalf("wrk %s: %v\n%s", name, err, out)
	}
	r := parseWrk(name, string(out))
	if pid > 0 && r.requests > 0 {
		r.cpuPerReq = float64(after-before) * 1e4 / float64(r.requests) // ticks are 10 ms
	}
	r.stored = -1
	log.Printf("%-52s %8.0f req/s  p50 %6.2fms  p99 %6.2fms  non-2xx %d  cpu %.0f µs/req", name, r.rps, r.p50, r.p99, r.non2xx, r.cpuPerReq)
	return r
}

// parseWrk reads wrk's summary (with --latency).
func parseWrk(name, out string) row {
	r := row{name: name}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "50%":
			r.p50 = wrkMillis(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99 = wrkMillis(f[1])
		case len(f) >= 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(sc.Text(), "  Non-2xx or 3xx responses:"):
			r.non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		case strings.HasPrefix(sc.Text(), "  Socket errors:"):
			r.errors = strings.TrimSpace(sc.Text())
		}
	}
	r.acked = r.requests - r.non2xx
	return r
}

func wrkMillis(s string) float64 {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 6e4}} {
		if strings.HasSuffix(s, u.suffix) {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
			return v * u.ms
		}
	}
	return 0
}

// table writes rows as markdown.
func table(title string, rows []row, stored bool) string {
	var s strings.Builder
	fmt.Fprintf(&s, "\n### %s\n\n| run | req/s | p50 ms | p99 ms | front CPU µs/req | non-2xx |", title)
	if stored {
		s.WriteString(" acknowledged | stored afterwards |")
	}
	s.WriteString("\n|---|---:|---:|---:|---:|---:|")
	if stored {
		s.WriteString("---:|---:|")
	}
	s.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %.0f | %.2f | %.2f | %.0f | %d |", r.name, r.rps, r.p50, r.p99, r.cpuPerReq, r.non2xx)
		if stored {
			st := "—"
			if r.stored >= 0 {
				st = strconv.FormatInt(r.stored, 10)
			}
			fmt.Fprintf(&s, " %d | %s |", r.acked, st)
		}
		s.WriteString("\n")
	}
	return s.String()
}

func ratio(a, b row) float64 {
	if b.rps == 0 {
		return 0
	}
	return a.rps / b.rps
}

// edgeConfig writes an edge.toml and returns its path and the edge's
// public and admin addresses. pipeline is [backends] pipeline (1 = none).
func (b *bench) edgeConfig(name string, backends []string, respond, protocol string, pipeline int) (path, public, admin string) {
	public, admin = freeAddr(), freeAddr()
	quoted := make([]string, len(backends))
	for i, u := range backends {
		quoted[i] = strconv.Quote(u)
	}
	dir := filepath.Join(b.dir, name)
	conf := fmt.Sprintf(`[server]
address = %q
respond = %q

[admin]
address = %q

[partition]
count = %d

[backends]
urls = [%s]
pipeline = %d

[buffer]
path = %q

[delivery]
protocol = %q

[log]
level = "warn"
`, public, respond, admin, len(backends), strings.Join(quoted, ", "), pipeline, filepath.Join(dir, "buffer"), protocol)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	path = filepath.Join(dir, "edge.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		log.Fatal(err)
	}
	return path, public, admin
}

// startEdge starts an edge and waits for its listener (and, with live
// backends, for its readiness probes).
func (b *bench) startEdge(name string, backends []string, respond, protocol string, live bool) (pid int, public, admin string) {
	return b.startEdgePipelined(name, backends, respond, protocol, 1, live)
}

// startEdgePipelined is startEdge with [backends] pipeline set.
func (b *bench) startEdgePipelined(name string, backends []string, respond, protocol string, pipeline int, live bool) (pid int, public, admin string) {
	cfg, public, admin := b.edgeConfig(name, backends, respond, protocol, pipeline)
	cmd := b.start(name, nil, b.edge, "run", "-config", cfg)
	waitListen(public)
	if live {
		waitPartitionsReady(admin)
	}
	return cmd.Process.Pid, public, admin
}

func waitPartitionsReady(admin string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ps, err := partitions(admin)
		ready := err == nil && len(ps) > 0
		for _, p := range ps {
			ready = ready && p.Ready
		}
		if ready {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("edge %s: backends not ready after 30s", admin)
}

type partitionView struct {
	Ready  bool `json:"ready"`
	Queued int  `json:"queued"`
}

func partitions(admin string) ([]partitionView, error) {
	resp, err := http.Get("http://" + admin + "/edge/v1/partitions")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct {
		Partitions []partitionView `json:"partitions"`
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	return v.Partitions, err
}

// drain waits until the edge's queue is empty (at most 5 minutes).
func drain(admin string) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		ps, err := partitions(admin)
		queued := 0
		for _, p := range ps {
			queued += p.Queued
		}
		if err == nil && queued == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	log.Printf("edge %s: queue not drained after 5 minutes", admin)
}
