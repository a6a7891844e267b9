package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The benchmarks report records per second ("recs/s") so the figures can be
// compared across runs with different b.N; the baseline benchmarks do the
// same with a plain file, in the same run.

const benchBody = 300

// runWriters runs n calls of fn spread over w goroutines and reports the
// rate.
func runWriters(b *testing.B, w int, fn func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := fn(int(i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "recs/s")
}

// BenchmarkAppend measures durable appends (fsync on) of one 300-byte
// request per call, from 1 and 64 concurrent writers.
func BenchmarkAppend(b *testing.B) {
	for _, w := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			q := openTest(b, b.TempDir(), 3)
			ctx := context.Background()
			runWriters(b, w, func(i int) error {
				_, err := q.Append(ctx, []*Record{newRecord(i%3, fmt.Sprintf("proc-%d", i%1000), benchBody)})
				return err
			})
		})
	}
}

// BenchmarkRawFile is the baseline: the same records (encoded as the queue
// encodes them) appended to a plain file with fsync. writers=1 syncs every
// record; writers=64 group-commits: a writer goroutine takes everything
// pending, writes it and syncs once.
func BenchmarkRawFile(b *testing.B) {
	rec := encodeRecord(newRecord(0, "proc-1", benchBody))
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(rec)))
	frame = append(frame, rec...)
	b.Run("writers=1", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		runWriters(b, 1, func(int) error {
			if _, err := f.Write(frame); err != nil {
				return err
			}
			return f.Sync()
		})
	})
	b.Run("writers=64", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		type req struct{ done chan error }
		reqs := make(chan req, 1024)
		stop := make(chan struct{})
		var loop sync.WaitGroup
		loop.Add(1)
		go func() {
			defer loop.Done()
			var buf bytes.Buffer
			var pending []req
			for {
				select {
				case r := <-reqs:
					pending = append(pending[:0], r)
				case <-stop:
					return
				}
			more:
				for len(pending) < 1024 {
					select {
					case r := <-reqs:
						pending = append(pending, r)
					default:
						break more
					}
				}
				buf.Reset()
				for range pending {
					buf.Write(frame)
				}
				_, err := f.Write(buf.Bytes())
				if err == nil {
					err = f.Sync()
				}
				for _, r := range pending {
					r.done <- err
				}
			}
		}()
		runWriters(b, 64, func(int) error {
			r := req{done: make(chan error, 1)}
			reqs <- r
			return <-r.done
		})
		close(stop)
		loop.Wait()
	})
}

// BenchmarkBadgerBatch compares the two ways to write one group commit of
// 64 records (queue key + id index each) to Badger, followed by DB.Sync:
// one transaction, or a WriteBatch.
func BenchmarkBadgerBatch(b *testing.B) {
	val := encodeRecord(newRecord(0, "proc-1", benchBody))
	for _, kind := range []string{"txn", "writebatch"} {
		b.Run(kind, func(b *testing.B) {
			t := defaultTuning()
			db, err := badger.Open(badgerOptions(b.TempDir(), t, discardLogger(), false))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			const per = 64
			seq := uint64(0)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i += per {
				n := min(per, b.N-i)
				if kind == "txn" {
					txn := db.NewTransaction(true)
					for range n {
						seq++
						_ = txn.Set(seqKey(prefixQueue, 0, seq), val)
						_ = txn.Set(stringKey(prefixIndex, fmt.Sprint(seq)), encodeIndex(indexQueued, 0, seq))
					}
					if err := txn.Commit(); err != nil {
						b.Fatal(err)
					}
				} else {
					wb := db.NewWriteBatch()
					for range n {
						seq++
						_ = wb.Set(seqKey(prefixQueue, 0, seq), val)
						_ = wb.Set(stringKey(prefixIndex, fmt.Sprint(seq)), encodeIndex(indexQueued, 0, seq))
					}
					if err := wb.Flush(); err != nil {
						b.Fatal(err)
					}
				}
				if err := db.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "recs/s")
		})
	}
}

// BenchmarkReadAck measures the drain rate: b.N queued records are read in
// batches of 256 by one reader and acknowledged by 64 workers.
func BenchmarkReadAck(b *testing.B) {
	q := openTest(b, b.TempDir(), 1)
	ctx := context.Background()
	const fill = 256
	for i := 0; i < b.N; i += fill {
		recs := make([]*Record, min(fill, b.N-i))
		for j := range recs {
			recs[j] = newRecord(0, fmt.Sprintf("proc-%d", j), benchBody)
		}
		mustAppend(b, q, recs...)
	}
	work := make(chan *Record, 1024)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 202}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	b.ResetTimer()
	start := time.Now()
	after, n := uint64(0), 0
	for n < b.N {
		recs, err := q.Read(0, after, 256, 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) == 0 {
			b.Fatalf("read nothing after %d of %d", n, b.N)
		}
		for _, r := range recs {
			work <- r
		}
		after = recs[len(recs)-1].Seq
		n += len(recs)
	}
	close(work)
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "recs/s")
	if st := q.Stats(); st.Partitions[0].Records != 0 {
		b.Fatalf("%d records left", st.Partitions[0].Records)
	}
}

// BenchmarkValueThreshold compares durable appends (64 writers) of 300-byte
// and 4 KiB requests with the value-log threshold at 1 KiB (larger values
// go to the value log) and at Badger's maximum, 1 MiB (values stay in the
// LSM tree).
func BenchmarkValueThreshold(b *testing.B) {
	for _, body := range []int{benchBody, 4 << 10} {
		for _, vt := range []int64{1 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("body=%d/threshold=%d", body, vt), func(b *testing.B) {
				tu := defaultTuning()
				tu.valueThreshold = vt
				q, err := openTuned(Options{Path: b.TempDir(), Partitions: 3}, tu)
				if err != nil {
					b.Fatal(err)
				}
				defer q.Close()
				ctx := context.Background()
				runWriters(b, 64, func(i int) error {
					_, err := q.Append(ctx, []*Record{newRecord(i%3, fmt.Sprintf("proc-%d", i%1000), body)})
					return err
				})
			})
		}
	}
}

// BenchmarkSyncMode compares the ways of making a group commit durable:
// "wal" fdatasyncs every memtable file (the default; covers rotated
// memtables), "dbsync" is DB.Sync alone (misses rotated memtables: the
// old behaviour), "syncwrites" is Badger's SyncWrites (a sync inside every
// write). Durable appends of one 300-byte record per call.
func BenchmarkSyncMode(b *testing.B) {
	for _, m := range []struct {
		name string
		mode syncMode
	}{{"wal", syncWAL}, {"dbsync", syncDB}, {"syncwrites", syncWrites}} {
		for _, w := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", m.name, w), func(b *testing.B) {
				t := defaultTuning()
				t.sync = m.mode
				qq, err := openTuned(Options{Path: b.TempDir(), Partitions: 3, Logger: discardLogger()}, t)
				if err != nil {
					b.Fatal(err)
				}
				defer qq.Close()
				ctx := context.Background()
				runWriters(b, w, func(i int) error {
					_, err := qq.Append(ctx, []*Record{newRecord(i%3, fmt.Sprintf("proc-%d", i%1000), benchBody)})
					return err
				})
			})
		}
	}
}
