// Command e2e measures the edge end to end against baselines run in the same
// process and the same minute, so the figures are ratios, not absolutes:
//
//   - accept mode (durable append, then 202) against a plain Go server
//     that answers 202 (the HTTP ceiling of this machine);
//   - relay mode (durable append, delivery, the backend's answer relayed)
//     against a naive httputil.ReverseProxy hashing X-Process-ID over the
//     same three backends (keeps nothing on disk).
//
// The edge is the real binary (`edge run`, built from ./cmd/edge unless
// -edge-bin names one), in its own process with its own runtime settings, as
// deployed; the baselines, the three backends and the load generator run in
// this process with Go's defaults. With -cpuprofile the edge runs in this
// process instead, so the profile covers it.
//
// Load: vegeta as a library, closed loop with -connections workers, 300-byte
// POSTs with random process ids. Everything runs on loopback.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/server"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "length of each run")
	conns := flag.Int("connections", 64, "concurrent connections (closed-loop workers)")
	out := flag.String("out", "", "also write the markdown table to this file")
	only := flag.String("only", "", "run only this edge mode (accept|relay), with its baseline")
	cpuProfile := flag.String("cpuprofile", "", "run the edge in this process and write a CPU profile of its runs to this file")
	edgeBin := flag.String("edge-bin", "", "edge binary to run (default: build ./cmd/edge into a temporary directory)")
	flag.Parse()
	es := edges{inProcess: *cpuProfile != ""}
	if es.inProcess {
		// Give the in-process edge the GC settings `edge run` uses
		// (cmd/edge/runtime.go); the baselines get them too in this mode.
		debug.SetGCPercent(400)
		debug.SetMemoryLimit(192 << 20)
	} else {
		es.bin = *edgeBin
		if es.bin == "" {
			es.bin = buildEdge()
			defer os.RemoveAll(filepath.Dir(es.bin))
		}
	}

	backends := make([]string, 3)
	for i := range backends {
		backends[i] = serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health/readiness" {
				return
			}
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"ok":true}`)
		}))
	}
	plain := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"queued"}`)
	}))
	naive := serve(naiveProxy(backends))

	var rows []row
	run := func(name, target string) row {
		r := attack(name, target, *duration, *conns)
		log.Printf("%-28s %9.0f req/s  p50 %7.2fms  p99 %7.2fms  ok %.2f%%", name, r.rps, r.p50, r.p99, r.success*100)
		rows = append(rows, r)
		return r
	}
	profile := func(f func() row) row {
		if *cpuProfile == "" {
			return f()
		}
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		defer pf.Close()
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
		return f()
	}
	defer es.stopAll()
	var base202, accept, intake, baseProxy, relay row
	if *only != "relay" {
		base202 = run("plain Go server (202)", plain)
		accept = profile(func() row { return run("edge, respond=accept", es.start(backends, "accept")) })
		es.stopAll() // its backlog must not keep delivering during the next runs
		// The intake alone: the same edge with its backends unreachable, so
		// nothing is delivered during the run (the delivery's HTTP work
		// shares these 2 cores in the run above).
		down := []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}
		intake = run("edge, respond=accept, backends down (intake only)", es.start(down, "accept"))
		es.stopAll()
	}
	if *only != "accept" {
		baseProxy = run("httputil.ReverseProxy", naive)
		relay = profile(func() row { return run("edge, respond=relay", es.start(backends, "relay")) })
	}

	var b strings.Builder
	fmt.Fprintf(&b, "| run | req/s | p50 ms | p99 ms | success |\n|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %.2f%% |\n", r.name, r.rps, r.p50, r.p99, r.success*100)
	}
	fmt.Fprintf(&b, "\naccept / plain 202 = **%.2f×** (target ≥ 0.5×; intake only: %.2f×); relay / ReverseProxy = **%.2f×** (target ≥ 1.5×)\n",
		accept.rps/base202.rps, intake.rps/base202.rps, relay.rps/baseProxy.rps)
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

type row struct {
	name          string
	rps, p50, p99 float64
	success       float64
}

func serve(h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, h)
	return "http://" + ln.Addr().String()
}

// naiveProxy is the classic hand-made recipe: hash the key, ReverseProxy to
// the backend, Go's default transport.
func naiveProxy(backends []string) http.Handler {
	proxies := make([]*httputil.ReverseProxy, len(backends))
	for i, b := range backends {
		u, _ := url.Parse(b)
		proxies[i] = httputil.NewSingleHostReverseProxy(u)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxies[partition.OfString(r.Header.Get("X-Process-ID"), len(proxies))].ServeHTTP(w, r)
	})
}

// edges are the edges started by the runs, stopped and removed after each
// run: as `edge run` processes, or in this process when inProcess.
type edges struct {
	inProcess bool
	bin       string
	stops     []func()
}

func (es *edges) stopAll() {
	for _, stop := range es.stops {
		stop()
	}
	es.stops = nil
}

// buildEdge builds ./cmd/edge into a temporary directory.
func buildEdge() string {
	dir, err := os.MkdirTemp("", "edge-bench-bin-")
	if err != nil {
		log.Fatal(err)
	}
	bin := filepath.Join(dir, "edge")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/edge")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("building the edge: %v", err)
	}
	return bin
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

// start starts an edge in front of backends and returns its public URL once
// it is ready.
func (es *edges) start(backends []string, respond string) string {
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		log.Fatal(err)
	}
	if es.inProcess {
		return es.startInProcess(dir, backends, respond)
	}
	public, admin := freeAddr(), freeAddr()
	quoted := make([]string, len(backends))
	for i, b := range backends {
		quoted[i] = fmt.Sprintf("%q", b)
	}
	conf := fmt.Sprintf(`[server]
address = %q
respond = %q

[admin]
address = %q

[partition]
count = %d

[backends]
urls = [%s]

[buffer]
path = %q

[log]
level = "warn"
`, public, respond, admin, len(backends), strings.Join(quoted, ", "), filepath.Join(dir, "buffer"))
	confPath := filepath.Join(dir, "edge.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		log.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "edge.log"))
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(es.bin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		log.Fatalf("starting the edge: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	es.stops = append(es.stops, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		_ = os.RemoveAll(dir)
	})
	// Ready when the public listener answers; with backends down the admin
	// readiness stays red by design, so it is not what is waited for.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			log.Fatalf("edge exited at start: %v (log %s)", err, logf.Name())
		default:
		}
		if c, err := net.DialTimeout("tcp", public, 100*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log.Fatalf("edge not listening on %s after 30s (log %s)", public, logf.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let the readiness probes see the backends before the first request.
	time.Sleep(300 * time.Millisecond)
	return "http://" + public
}

func (es *edges) startInProcess(dir string, backends []string, respond string) string {
	cfg := config.Default()
	cfg.Server.Address = "127.0.0.1:0"
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Server.Respond = respond
	cfg.Partition.Count = len(backends)
	cfg.Backends.URLs = backends
	cfg.Buffer.Path = dir
	if err := cfg.Validate(); err != nil {
		log.Fatal(err)
	}
	e, err := server.Start(context.Background(), cfg, nil, "bench")
	if err != nil {
		log.Fatal(err)
	}
	es.stops = append(es.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx) // records still queued are left behind with the directory
		_ = os.RemoveAll(dir)
	})
	// Wait for the readiness probes so the first requests are not paused.
	time.Sleep(300 * time.Millisecond)
	return "http://" + e.PublicAddr
}

func attack(name, target string, d time.Duration, conns int) row {
	body := []byte(strings.Repeat("x", 300))
	targeter := func(t *vegeta.Target) error {
		var k [8]byte
		rand.Read(k[:])
		t.Method, t.URL, t.Body = "POST", target+"/api/v1/events", body
		t.Header = http.Header{"X-Process-Id": {hex.EncodeToString(k[:])}, "Content-Type": {"application/json"}}
		return nil
	}
	a := vegeta.NewAttacker(vegeta.Workers(uint64(conns)), vegeta.MaxWorkers(uint64(conns)),
		vegeta.Connections(conns), vegeta.MaxConnections(conns), vegeta.KeepAlive(true), vegeta.Timeout(10*time.Second))
	var m vegeta.Metrics
	for res := range a.Attack(targeter, vegeta.Rate{Freq: 0}, d, name) {
		m.Add(res)
	}
	m.Close()
	return row{name: name, rps: m.Throughput, p50: ms(m.Latencies.P50), p99: ms(m.Latencies.P99), success: m.Success}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
