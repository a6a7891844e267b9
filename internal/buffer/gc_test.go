package buffer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDiskReclaim fills a queue (small and value-log sized records), drains
// it, and waits for the GC goroutine to bring the disk use back near the
// empty queue's.
func TestDiskReclaim(t *testing.T) {
	if testing.Short() {
		t.Skip("fills ~60 MiB")
	}
	dir := t.TempDir()
	tu := defaultTuning()
	tu.gcDrainDelay = 50 * time.Millisecond
	tu.reclaimMin = 1 << 20
	noSync := false
	qq, err := openTuned(Options{Path: dir, Partitions: 3, Fsync: &noSync, Logger: testLogger(t)}, tu)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qq.Close() })
	q := qq.(*queue)
	ctx := context.Background()
	base := diskUsage(dir)

	const n = 40000
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 8 * 10 {
				recs := make([]*Record, 10)
				for j := range recs {
					size := benchBody
					if (i+j)%10 == 0 {
						size = 8 << 10 // value log
					}
					recs[j] = newRecord((i+j)%3, fmt.Sprintf("k%d", (i+j)%100), size)
				}
				if _, err := q.Append(ctx, recs); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	full := diskUsage(dir)
	work := make(chan *Record, 1024)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 200}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	total := 0
	for p := range 3 {
		after := uint64(0)
		for {
			recs := mustRead(t, q, p, after, 500)
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				work <- r
			}
			total += len(recs)
			after = recs[len(recs)-1].Seq
		}
	}
	close(work)
	wg.Wait()
	if total != n/8*8 && total == 0 {
		t.Fatalf("drained %d records", total)
	}
	drained := diskUsage(dir)
	if st := q.Stats(); st.Bytes != 0 {
		t.Fatalf("bytes after drain: %d", st.Bytes)
	}
	// Wait for the GC goroutine to reclaim every partition, then for the
	// disk: what is left is the outcomes (kept for OutcomeTTL) and the
	// tombstones of the id index, a few MiB.
	reclaimed := func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		for _, st := range q.parts {
			if st.peak != 0 {
				return false
			}
		}
		return true
	}
	bound := 2*base + 16<<20
	start := time.Now()
	var now int64
	for {
		now = diskUsage(dir)
		if reclaimed() && now <= bound {
			break
		}
		if time.Since(start) > 60*time.Second {
			_, ext := dirSizes(dir)
			t.Logf("files: %v\n%s", ext, q.db.LevelsToString())
			t.Fatalf("disk: empty %s, full %s, drained %s, still %s after 60 s (bound %s, all reclaimed: %v)",
				mib(base), mib(full), mib(drained), mib(now), mib(bound), reclaimed())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("disk: empty %s, full %s (%d records), drained %s, after reclaim+GC %s (%v after the drain)",
		mib(base), mib(full), total, mib(drained), mib(now), time.Since(start).Round(time.Millisecond))
}

func dirSizes(dir string) (int64, map[string]int64) {
	by := map[string]int64{}
	var total int64
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n := fi.Sys().(*syscall.Stat_t).Blocks * 512
			by[filepath.Ext(p)] += n
			total += n
		}
		return nil
	})
	return total, by
}

// testLogger logs to t (Info and above).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
