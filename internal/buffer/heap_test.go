package buffer

import (
	"context"
	"fmt"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// liveHeap is the Go heap that survived the last collection.
func liveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// TestHeapReserve drives a queue with the default tuning through sustained
// appends and acks and checks that the live heap never exceeds HeapReserve.
//
// Regression: the edge's soft memory limit (192 MiB) sat below the heap
// the queue keeps live under sustained writes, most of it Badger's pooled
// table-builder arenas (8 of them, ~156 MiB measured). The heap then never
// fell below the limit, the collector ran back to back (7,295 collections
// in 40 s) and a delivering edge fell from 9,000 to 3,100 req/s after ten
// seconds of load. The edge now derives its limit from HeapReserve, so this
// test is what keeps that figure honest.
func TestHeapReserve(t *testing.T) {
	const (
		parts   = 3
		writers = 32
		total   = 400_000 // ~190 MB of records through the tree
	)
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: parts}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		next, acked atomic.Int64
		wg          sync.WaitGroup
		errs        = make(chan error, writers+parts)
	)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= total && ctx.Err() == nil; i = next.Add(1) {
				r := newRecord(int(i)%parts, fmt.Sprintf("proc-%d", i%1000), benchBody)
				if i%4 == 0 {
					r.IdempotencyScope = r.ID
				}
				if _, err := q.Append(ctx, []*Record{r}); err != nil {
					errs <- fmt.Errorf("append: %w", err)
					return
				}
			}
		}()
	}
	for p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := uint64(0)
			for ctx.Err() == nil && acked.Load() < total {
				recs, err := q.Read(p, after, 256, 0)
				if err != nil {
					errs <- fmt.Errorf("read: %w", err)
					return
				}
				if len(recs) == 0 {
					select {
					case <-q.Notify(p):
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				for _, r := range recs {
					if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 200}); err != nil {
						errs <- fmt.Errorf("ack: %w", err)
						return
					}
					acked.Add(1)
				}
				after = recs[len(recs)-1].Seq
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// The live heap as of each collection, sampled while the load runs:
	// Badger returns its pooled arenas only after 2 s without a table build.
	var peak int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case err := <-errs:
			cancel()
			<-done
			t.Fatal(err)
		case <-tick.C:
		}
		peak = max(peak, liveHeap())
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("%d records appended and acked; peak live heap %s (HeapReserve %s)", acked.Load(), mib(peak), mib(HeapReserve))
	if peak > HeapReserve {
		t.Errorf("live heap reached %s, over HeapReserve %s: raise HeapReserve (the edge's soft memory limit follows it) or shrink the tuning",
			mib(peak), mib(HeapReserve))
	}
}
