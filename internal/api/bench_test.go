package api_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/testutil"
	"github.com/flowedge/flowedge/internal/testutil/pgtest"
)

// TestPacedLatency is the speed target: event append p95 < 20 ms (on the
// embedded store and on PostgreSQL) and health p95 < 10 ms at 500 req/s. It paces requests open-loop (each
// latency is measured from the request's scheduled send time, so a slow
// server cannot hide its queueing) against the real server (Badger with
// fsync per commit) on loopback, after a plain net/http server answering
// 201 as the baseline of the same run. Opt in with FLOW_API_BENCH=1;
// FLOW_API_BENCH_RATE and FLOW_API_BENCH_SECONDS change the load.
//
//	FLOW_API_BENCH=1 go test ./internal/api -run TestPacedLatency -v
func TestPacedLatency(t *testing.T) {
	if os.Getenv("FLOW_API_BENCH") == "" {
		t.Skip("set FLOW_API_BENCH=1 to run the paced latency benchmark")
	}
	rate, secs := envInt("FLOW_API_BENCH_RATE", 500), envInt("FLOW_API_BENCH_SECONDS", 5)
	body := []byte(`{"type":"order.created","order_id":"ord-0001","amount":1999,"currency":"EUR","customer":{"id":"cus-42","email":"someone@example.com"},"items":[{"sku":"sku-1","qty":1},{"sku":"sku-2","qty":2}],"note":"` + strings.Repeat("x", 60) + `"}`)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxIdleConns: 512}, Timeout: 10 * time.Second}

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
	}))
	defer plain.Close()
	e := newEnv(t)
	pg := newPGEnvWith(t, pgtest.Options{Durable: true}) // fsync and synchronous commit on, as in production

	post := func(url string, i int, key string) error {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-ID", fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i))
		req.Header.Set("X-Process-ID", fmt.Sprintf("proc-%d", i%100))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		return expect(client.Do(req))(http.StatusCreated)
	}
	runs := []struct {
		name string
		do   func(i int) error
	}{
		{"baseline: plain net/http POST → 201", func(i int) error { return post(plain.URL+"/x", i, "") }},
		{"event append (POST /api/v1/processes/{pid}/events)", func(i int) error {
			return post(fmt.Sprintf("%s/api/v1/processes/proc-%d/events", e.ts.URL, i%100), i, adminKey)
		}},
		{"event append on PostgreSQL (same route, DATABASE_URL)", func(i int) error {
			return post(fmt.Sprintf("%s/api/v1/processes/proc-%d/events", pg.ts.URL, i%100), i, adminKey)
		}},
		{"health (GET /health/health)", func(int) error {
			req, _ := http.NewRequest("GET", e.ts.URL+"/health/health", nil)
			return expect(client.Do(req))(http.StatusOK)
		}},
	}
	for _, r := range runs {
		paced(t, 50, 1, r.do) // warm up connections
		lat, errs := paced(t, rate, secs, r.do)
		slices.Sort(lat)
		t.Logf("%-52s %d req/s × %ds: p50 %6.2f ms  p95 %6.2f ms  p99 %6.2f ms  max %6.2f ms  errors %d",
			r.name, rate, secs, ms(pct(lat, 50)), ms(pct(lat, 95)), ms(pct(lat, 99)), ms(lat[len(lat)-1]), errs)
	}
}

// paced sends rate requests per second for secs seconds, each in its own
// goroutine at its scheduled time, and returns the latencies measured from
// those times.
func paced(t *testing.T, rate, secs int, do func(i int) error) ([]time.Duration, int64) {
	t.Helper()
	n := rate * secs
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at)) // pacing is the point here
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := do(i); err != nil {
				if errs.Add(1) == 1 {
					t.Log(err)
				}
			}
			lat[i] = time.Since(at)
		}()
	}
	wg.Wait()
	return lat, errs.Load()
}

func expect(res *http.Response, err error) func(int) error {
	return func(want int) error {
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			return fmt.Errorf("status %d: %s", res.StatusCode, b)
		}
		return nil
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkAppendEvent measures event appends through the whole HTTP stack
// with 32 × GOMAXPROCS concurrent clients over 100 processes (throughput,
// not latency), on the embedded store and on PostgreSQL (durable: fsync
// and synchronous commit on). ns/op is per append; appends/s is reported.
func BenchmarkAppendEvent(b *testing.B) {
	b.Run("badger", func(b *testing.B) { benchAppend(b, newEnv(b)) })
	b.Run("postgres", func(b *testing.B) { benchAppend(b, newPGEnvWith(b, pgtest.Options{Durable: true})) })
}

func benchAppend(b *testing.B, e *env) {
	body := []byte(`{"type":"tick","n":1}`)
	var seq atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			pid := fmt.Sprintf("proc-%d", i%100)
			req, _ := http.NewRequest("POST", e.ts.URL+"/api/v1/processes/"+pid+"/events", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+adminKey)
			req.Header.Set("X-Request-ID", fmt.Sprintf("b-%d", i))
			if err := expect(e.client.Do(req))(http.StatusCreated); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
}

// BenchmarkEventBatch compares api-flow's two ways of taking the real
// stack's load (each event a new process, 300-byte body, its own
// X-Request-ID): 32 concurrent clients per GOMAXPROCS posting one event each
// (64 on two cores; what a hashing proxy sends) against 2 concurrent edge
// batches per GOMAXPROCS (4 on two cores) of 4, 16 or 64 parts (what the
// edge sends with protocol = "batch"). Every part must be answered 201. One
// op is one event; cpu-µs/event is the whole process (server and client)
// from getrusage.
func BenchmarkEventBatch(b *testing.B) {
	body := `{"type":"bench","data":"` + strings.Repeat("x", 270) + `"}`
	var seq atomic.Int64
	b.Run("direct", func(b *testing.B) {
		e := newEnv(b)
		b.SetParallelism(32)
		measureEvents(b, func(pb *testing.PB) {
			for pb.Next() {
				i := seq.Add(1)
				req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/processes/p%x/events", e.ts.URL, i), strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+adminKey)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Request-ID", fmt.Sprintf("d-%d", i))
				if err := expect(e.client.Do(req))(http.StatusCreated); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	for _, size := range []int{4, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := newEnv(b)
			b.SetParallelism(2)
			measureEvents(b, func(pb *testing.PB) {
				var buf bytes.Buffer
				for {
					buf.Reset()
					mw := multipart.NewWriter(&buf)
					n := 0
					for n < size && pb.Next() {
						i := seq.Add(1)
						pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}})
						fmt.Fprintf(pw, "POST /api/v1/processes/p%x/events HTTP/1.1\r\nHost: api\r\nX-Process-ID: p%x\r\nX-Request-ID: b-%d\r\nX-Edge-Attempt: 1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
							i, i, i, adminKey, len(body), body)
						n++
					}
					if n == 0 {
						return
					}
					mw.Close()
					res, err := e.client.Post(e.ts.URL+api.BatchPath, "multipart/mixed; boundary="+mw.Boundary(), &buf)
					if err := allCreated(res, err, n); err != nil {
						b.Error(err)
						return
					}
					if n < size {
						return
					}
				}
			})
		})
	}
}

// allCreated checks that a batch's answer holds n parts, each 201, and
// reads it to the end (so the client keeps the connection).
func allCreated(res *http.Response, err error, n int) error {
	if err != nil {
		return err
	}
	defer res.Body.Close()
	defer io.Copy(io.Discard, res.Body)
	_, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if res.StatusCode != http.StatusOK || err != nil {
		return fmt.Errorf("batch answered %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(res.Body, params["boundary"])
	for i := range n {
		p, err := mr.NextPart()
		if err != nil {
			return fmt.Errorf("answer part %d: %w", i+1, err)
		}
		r, err := http.ReadResponse(bufio.NewReader(p), nil)
		if err != nil {
			return fmt.Errorf("answer part %d: %w", i+1, err)
		}
		if r.StatusCode != http.StatusCreated {
			b, _ := io.ReadAll(r.Body)
			return fmt.Errorf("part %d answered %d: %s", i+1, r.StatusCode, b)
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		return fmt.Errorf("answer holds more than the %d parts sent (%v)", n, err)
	}
	return nil
}

// measureEvents runs body in parallel and reports events/s and the
// process's CPU per event.
func measureEvents(b *testing.B, body func(*testing.PB)) {
	cpu0 := testutil.CPUTime()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(body)
	elapsed := time.Since(start)
	cpu := testutil.CPUTime() - cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
}
