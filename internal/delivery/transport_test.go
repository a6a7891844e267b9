package delivery

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/testutil"
)

// h2cServer is a backend that speaks cleartext HTTP/2 (prior knowledge)
// and HTTP/1.1, counting requests per protocol major version.
func h2cServer(t testing.TB, h2, h1 *atomic.Int64, batch bool) *httptest.Server {
	store := newDedupeStore()
	bs := &batchServer{store: store}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		} else {
			h1.Add(1)
		}
		if batch && r.URL.Path == "/_edge/batch" {
			bs.ServeHTTP(w, r)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// TestH2CDelivery: [backends] h2c = true delivers over cleartext HTTP/2.
func TestH2CDelivery(t *testing.T) {
	var h2, h1 atomic.Int64
	srv := h2cServer(t, &h2, &h1, false)
	q := openQueue(t, t.TempDir(), 1)
	var recs []*buffer.Record
	for i := range 20 {
		recs = append(recs, testRecord(fmt.Sprintf("k%d", i), 1, "x"))
	}
	appendRecs(t, q, recs...)
	startEngine(t, q, 1, srv, func(o *Options) { o.H2C = true })
	waitFor(t, "queue drained", queueEmpty(q))
	if h2.Load() != 20 || h1.Load() != 0 {
		t.Fatalf("HTTP/2 requests %d, HTTP/1.1 %d: want all 20 over h2c", h2.Load(), h1.Load())
	}
}

// benchDeliver measures delivering b.N queued records (64 keys) through a
// real queue to a local backend; compare the variants' ratios in one run:
//
//	go test -run '^$' -bench Deliver -benchtime 5000x ./internal/delivery
func benchDeliver(b *testing.B, mod func(*Options), batch bool, tweak ...func(*Engine)) {
	var h2, h1 atomic.Int64
	srv := h2cServer(b, &h2, &h1, batch)
	q := openQueue(b, b.TempDir(), 1)
	recs := make([]*buffer.Record, 0, b.N)
	for i := range b.N {
		recs = append(recs, testRecord(fmt.Sprintf("k%d", i%64), 1, "a 300-byte body"+string(make([]byte, 285))))
	}
	for i := 0; i < len(recs); i += 1000 {
		appendRecs(b, q, recs[i:min(i+1000, len(recs))]...)
	}
	b.ResetTimer()
	cpu0 := testutil.CPUTime()
	startEngineTweaked(b, q, 1, srv, mod, tweak...)
	waitFor(b, "queue drained", queueEmpty(q))
	b.StopTimer()
	// The process's CPU (edge and backend both) is steadier than wall time
	// on a shared machine.
	b.ReportMetric(float64((testutil.CPUTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func BenchmarkDeliverHTTP1(b *testing.B) { benchDeliver(b, nil, false) }

// BenchmarkDeliverPipeline is request mode with 8 requests pipelined per
// write on each worker's own connection.
func BenchmarkDeliverPipeline(b *testing.B) {
	benchDeliver(b, func(o *Options) { o.Pipeline = 8 }, false)
}

// BenchmarkDeliverNetHTTP is request mode over net/http's Transport
// instead of the workers' own connections.
func BenchmarkDeliverNetHTTP(b *testing.B) {
	benchDeliver(b, nil, false, func(e *Engine) { e.netHTTP = true })
}
func BenchmarkDeliverH2C(b *testing.B) { benchDeliver(b, func(o *Options) { o.H2C = true }, false) }
func BenchmarkDeliverBatch(b *testing.B) {
	benchDeliver(b, func(o *Options) { o.Protocol = ProtocolBatch }, true)
}

// TestWireReconnects: the workers' own keep-alive connections survive a
// backend that closes a connection after each answer without saying so (the
// next request finds it closed), one that says Connection: close, and
// chunked answers: every record is delivered on its first attempt (a stale
// connection is redialled, not counted as a failed attempt).
func TestWireReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var attempts sync.Map
	var n atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close() // one answer per connection, then hang up silently
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				attempts.Store(req.Header.Get("X-Request-ID"), req.Header.Get("X-Edge-Attempt"))
				switch n.Add(1) % 3 {
				case 0:
					io.WriteString(c, "HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
				case 1:
					io.WriteString(c, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
				default:
					io.WriteString(c, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	q := openQueue(t, t.TempDir(), 1)
	var recs []*buffer.Record
	for i := range 60 {
		recs = append(recs, testRecord(fmt.Sprintf("k%d", i%4), 1, "x"))
	}
	appendRecs(t, q, recs...)
	e, err := New(Options{Queue: q, Partitions: 1, BackendURL: func(int) string { return "http://" + ln.Addr().String() },
		InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Timeout: 5 * time.Second, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	e.Start(context.Background())
	t.Cleanup(func() { e.Stop(time.Second); q.Close() })
	waitFor(t, "queue drained", queueEmpty(q))
	for _, r := range recs {
		if a, _ := attempts.Load(r.ID); a != "1" {
			t.Errorf("%s: X-Edge-Attempt %v, want 1 (a stale connection counted as a failed attempt)", r.ID, a)
		}
	}
}
