package delivery

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/flowedge/flowedge/internal/buffer"
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
func benchDeliver(b *testing.B, mod func(*Options), batch bool) {
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
	startEngine(b, q, 1, srv, mod)
	waitFor(b, "queue drained", queueEmpty(q))
	b.StopTimer()
}

func BenchmarkDeliverHTTP1(b *testing.B) { benchDeliver(b, nil, false) }
func BenchmarkDeliverH2C(b *testing.B)   { benchDeliver(b, func(o *Options) { o.H2C = true }, false) }
func BenchmarkDeliverBatch(b *testing.B) {
	benchDeliver(b, func(o *Options) { o.Protocol = ProtocolBatch }, true)
}
