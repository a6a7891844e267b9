// Package storetest is the conformance suite every store.Store passes: the
// embedded Badger store and the PostgreSQL store run the same tests.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
)

// Factory makes fresh, empty storage for one test and returns a function
// that opens a Store on it; each call opens the same storage again (after
// the previous Store was closed), which is how the suite checks
// durability. Stores it opens are closed by the suite.
type Factory func(t *testing.T) (open func() store.Store)

// Run runs the suite against the stores f makes.
func Run(t *testing.T, f Factory) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, func() store.Store)
	}{
		{"KeyValue", testKeyValue},
		{"ScanPages", testScanPages},
		{"TTL", testTTL},
		{"UpdateAtomic", testUpdateAtomic},
		{"ProcessLog", testProcessLog},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ExactlyOnce", testExactlyOnce},
		{"Durable", testDurable},
		{"Partitioning", testPartitioning},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, f(t)) })
	}
}

// opened opens a Store and closes it when the test ends.
func opened(t *testing.T, open func() store.Store) store.Store {
	t.Helper()
	s := open()
	t.Cleanup(func() { s.Close() })
	return s
}

func update(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func scanAll(t *testing.T, s store.Store, prefix, from string) []string {
	t.Helper()
	var keys []string
	view(t, s, func(tx store.Tx) error {
		keys = keys[:0]
		var f []byte
		if from != "" {
			f = []byte(from)
		}
		return tx.Scan([]byte(prefix), f, func(k, v []byte) (bool, error) {
			if !bytes.Equal(v, append([]byte("v:"), k...)) {
				return false, fmt.Errorf("key %q has value %q", k, v)
			}
			keys = append(keys, string(k))
			return true, nil
		})
	})
	return keys
}

// testKeyValue: Get, Set, Delete and Scan keep byte order and prefixes.
func testKeyValue(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	keys := []string{"a/1", "a/2", "a/2\x00x", "a/\xff", "ab/1", "b/1", "a/10"}
	update(t, s, func(tx store.Tx) error {
		for _, k := range keys {
			if err := tx.Set([]byte(k), append([]byte("v:"), k...), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if got, want := fmt.Sprint(scanAll(t, s, "a/", "")), fmt.Sprint([]string{"a/1", "a/10", "a/2", "a/2\x00x", "a/\xff"}); got != want {
		t.Fatalf("scan a/: %q, want %q", got, want)
	}
	if got, want := fmt.Sprint(scanAll(t, s, "a/", "a/2\x00")), fmt.Sprint([]string{"a/2\x00x", "a/\xff"}); got != want {
		t.Fatalf("scan a/ from a/2\\0: %q, want %q", got, want)
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.Delete([]byte("a/10")); err != nil {
			return err
		}
		return tx.Delete([]byte("missing")) // not an error
	})
	view(t, s, func(tx store.Tx) error {
		if _, err := tx.Get([]byte("a/10")); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("deleted key: %v, want ErrNotFound", err)
		}
		v, err := tx.Get([]byte("ab/1"))
		if err != nil || string(v) != "v:ab/1" {
			return fmt.Errorf("Get ab/1 = %q, %v", v, err)
		}
		return nil
	})
	// Stop early.
	n := 0
	view(t, s, func(tx store.Tx) error {
		n = 0
		return tx.Scan([]byte("a/"), nil, func(_, _ []byte) (bool, error) { n++; return n < 2, nil })
	})
	if n != 2 {
		t.Fatalf("scan went on after false: %d calls", n)
	}
}

// testScanPages: a scan over more keys than an engine reads at once sees
// each once, in order, and fn may use the transaction meanwhile.
func testScanPages(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	const n = 700
	update(t, s, func(tx store.Tx) error {
		for i := range n {
			k := fmt.Sprintf("p/%05d", i)
			if err := tx.Set([]byte(k), append([]byte("v:"), k...), 0); err != nil {
				return err
			}
		}
		return nil
	})
	got := 0
	view(t, s, func(tx store.Tx) error {
		got = 0
		return tx.Scan([]byte("p/"), nil, func(k, _ []byte) (bool, error) {
			if want := fmt.Sprintf("p/%05d", got); string(k) != want {
				return false, fmt.Errorf("key %d is %q, want %q", got, k, want)
			}
			if _, err := tx.Get(k); err != nil { // the transaction is usable inside fn
				return false, err
			}
			got++
			return true, nil
		})
	})
	if got != n {
		t.Fatalf("scanned %d keys, want %d", got, n)
	}
}

// testTTL: a key with a TTL vanishes after it; others stay.
func testTTL(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	// Flake: Badger keeps whole-second expiry times, so a 1 s TTL could
	// expire the key before the first scan; 3 s leaves it at least 2 s.
	update(t, s, func(tx store.Tx) error {
		if err := tx.Set([]byte("t/short"), []byte("v:t/short"), 3*time.Second); err != nil {
			return err
		}
		return tx.Set([]byte("t/long"), []byte("v:t/long"), time.Hour)
	})
	if got := scanAll(t, s, "t/", ""); len(got) != 2 {
		t.Fatalf("before expiry: %q", got)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := scanAll(t, s, "t/", "")
		if len(got) == 1 && got[0] == "t/long" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the TTL: %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	view(t, s, func(tx store.Tx) error {
		if _, err := tx.Get([]byte("t/short")); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("expired key: %v", err)
		}
		return nil
	})
}

// testUpdateAtomic: a function that fails after writing leaves nothing;
// the Updates that run alongside it are kept.
func testUpdateAtomic(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			errs[i] = s.Update(context.Background(), func(tx store.Tx) error {
				k := fmt.Sprintf("u/%02d", i)
				if err := tx.Set([]byte(k), append([]byte("v:"), k...), 0); err != nil {
					return err
				}
				ev := store.Event{ProcessID: "atomic", ID: fmt.Sprintf("00000000-0000-7000-8000-%012d", i), Data: json.RawMessage(`{}`), CreatedAt: time.Now().UTC()}
				if _, err := tx.AppendEvent(&ev, "u", fmt.Sprint("r", i)); err != nil {
					return err
				}
				if i%3 == 0 {
					return boom
				}
				return nil
			})
		})
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		if i%3 == 0 {
			if !errors.Is(err, boom) {
				t.Fatalf("update %d: %v, want boom", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		want++
	}
	got := scanAll(t, s, "u/", "")
	if len(got) != want {
		t.Fatalf("%d keys kept, want %d: %q", len(got), want, got)
	}
	for _, k := range got {
		var i int
		fmt.Sscanf(k, "u/%d", &i)
		if i%3 == 0 {
			t.Fatalf("key of a failed update kept: %s", k)
		}
	}
	view(t, s, func(tx store.Tx) error {
		evs, err := tx.Events("atomic", 0, 100)
		if err != nil {
			return err
		}
		if len(evs) != want {
			return fmt.Errorf("%d events, want %d", len(evs), want)
		}
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) {
				return fmt.Errorf("event %d has seq %d", i, ev.Seq)
			}
		}
		return nil
	})
}

// testProcessLog: appends number events from 1, reads find them, and the
// process summary and job counter follow. An event's data comes back byte
// for byte (regression: Badger stored it through json.Marshal, which turned
// "<" into "\u003c").
func testProcessLog(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i, pid := range []string{"b", "a", "c", "a", "a"} {
		update(t, s, func(tx store.Tx) error {
			ev := store.Event{ProcessID: pid, ID: fmt.Sprintf("00000000-0000-7000-8000-%012d", i), Type: fmt.Sprint("t", i),
				Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"s":"<b>x</b> & y"}`, i)), RequestID: fmt.Sprint("req", i), CreatedAt: t0.Add(time.Duration(i) * time.Second)}
			owner := "alice"
			if pid == "b" {
				owner = "bob"
			}
			p, err := tx.AppendEvent(&ev, owner, ev.RequestID)
			if err != nil {
				return err
			}
			if p.LastSeq != ev.Seq || p.ID != pid || p.Owner != owner || p.LastEventType != ev.Type {
				return fmt.Errorf("after append: process %+v, event seq %d", p, ev.Seq)
			}
			return nil
		})
	}
	view(t, s, func(tx store.Tx) error {
		p, err := tx.Process("a")
		if err != nil {
			return err
		}
		if p.LastSeq != 3 || p.Owner != "alice" || p.LastEventType != "t4" || !p.CreatedAt.Equal(t0.Add(time.Second)) ||
			p.LastEventAt == nil || !p.LastEventAt.Equal(t0.Add(4*time.Second)) || !p.UpdatedAt.Equal(t0.Add(4*time.Second)) {
			return fmt.Errorf("process a: %+v", p)
		}
		if _, err := tx.Process("zz"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("missing process: %v", err)
		}
		evs, err := tx.Events("a", 1, 10)
		if err != nil {
			return err
		}
		if len(evs) != 2 || evs[0].Seq != 2 || evs[1].Seq != 3 || evs[1].Type != "t4" || evs[1].RequestID != "req4" ||
			string(evs[1].Data) != `{"i":4,"s":"<b>x</b> & y"}` || !evs[1].CreatedAt.Equal(t0.Add(4*time.Second)) {
			return fmt.Errorf("events of a after 1: %+v", evs)
		}
		if evs, err := tx.Events("a", 0, 1); err != nil || len(evs) != 1 || evs[0].Seq != 1 {
			return fmt.Errorf("first event of a: %+v %v", evs, err)
		}
		ev, err := tx.Event("a", 2)
		if err != nil || ev.ID != "00000000-0000-7000-8000-000000000003" {
			return fmt.Errorf("event a/2: %+v %v", ev, err)
		}
		if _, err := tx.Event("a", 4); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("event a/4: %v", err)
		}
		ps, err := tx.Processes("", "", 10)
		if err != nil || len(ps) != 3 || ps[0].ID != "a" || ps[1].ID != "b" || ps[2].ID != "c" {
			return fmt.Errorf("processes: %+v %v", ps, err)
		}
		ps, err = tx.Processes("a", "alice", 10)
		if err != nil || len(ps) != 1 || ps[0].ID != "c" {
			return fmt.Errorf("alice's processes after a: %+v %v", ps, err)
		}
		ps, err = tx.Processes("", "", 2)
		if err != nil || len(ps) != 2 {
			return fmt.Errorf("first two processes: %+v %v", ps, err)
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		p, err := tx.NextJob("a", "mallory", t0.Add(time.Minute))
		if err != nil || p.Jobs != 1 || p.Owner != "alice" || p.LastSeq != 3 {
			return fmt.Errorf("NextJob a: %+v %v", p, err)
		}
		p, err = tx.NextJob("new", "carol", t0)
		if err != nil || p.Jobs != 1 || p.Owner != "carol" || p.LastSeq != 0 {
			return fmt.Errorf("NextJob new: %+v %v", p, err)
		}
		p, err = tx.NextJob("new", "carol", t0)
		if err != nil || p.Jobs != 2 {
			return fmt.Errorf("NextJob new again: %+v %v", p, err)
		}
		return nil
	})
}

// testConcurrentAppends: many writers appending to a few processes at once
// give each process the sequence 1..n: no gap, no duplicate, and no append
// fails.
func testConcurrentAppends(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	const writers, each = 64, 8
	pids := []string{"hot-1", "hot-2"}
	for i := range 100 {
		pids = append(pids, fmt.Sprint("cold-", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				pid := pids[(w*7+i)%len(pids)]
				if i%2 == 0 {
					pid = pids[w%2] // half of them on the two hot processes
				}
				err := s.Update(context.Background(), func(tx store.Tx) error {
					ev := store.Event{ProcessID: pid, ID: fmt.Sprintf("00000000-0000-7000-%04d-%012d", w, i), Data: json.RawMessage(`1`), CreatedAt: time.Now().UTC()}
					_, err := tx.AppendEvent(&ev, "o", fmt.Sprintf("w%d-%d", w, i))
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
	total := 0
	view(t, s, func(tx store.Tx) error {
		total = 0
		for _, pid := range pids {
			evs, err := tx.Events(pid, 0, writers*each)
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for i, ev := range evs {
				if ev.Seq != uint64(i+1) {
					return fmt.Errorf("%s: event %d has seq %d", pid, i, ev.Seq)
				}
				if seen[ev.ID] {
					return fmt.Errorf("%s: event %s twice", pid, ev.ID)
				}
				seen[ev.ID] = true
			}
			p, err := tx.Process(pid)
			if err != nil || p.LastSeq != uint64(len(evs)) {
				return fmt.Errorf("%s: summary %+v %v, %d events", pid, p, err, len(evs))
			}
			total += len(evs)
		}
		return nil
	})
	if total != writers*each {
		t.Fatalf("%d events, want %d", total, writers*each)
	}
}

// testExactlyOnce: the same append (dedup name) raced by many writers
// lands once; the others get ErrDuplicate; another process may reuse the
// name.
func testExactlyOnce(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	const racers = 12
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			errs[i] = s.Update(context.Background(), func(tx store.Tx) error {
				ev := store.Event{ProcessID: "once", ID: fmt.Sprintf("00000000-0000-7000-8000-%012d", i), Data: json.RawMessage(`1`), CreatedAt: time.Now().UTC()}
				_, err := tx.AppendEvent(&ev, "o", "the-request")
				return err
			})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrDuplicate):
			t.Fatalf("racer: %v, want nil or ErrDuplicate", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d racers appended, want 1", ok)
	}
	update(t, s, func(tx store.Tx) error {
		ev := store.Event{ProcessID: "other", ID: "00000000-0000-7000-8000-999999999999", Data: json.RawMessage(`1`), CreatedAt: time.Now().UTC()}
		_, err := tx.AppendEvent(&ev, "o", "the-request")
		return err
	})
	view(t, s, func(tx store.Tx) error {
		evs, err := tx.Events("once", 0, 100)
		if err != nil || len(evs) != 1 || evs[0].Seq != 1 {
			return fmt.Errorf("events of once: %+v %v", evs, err)
		}
		return nil
	})
}

// testDurable: what an Update committed is there after closing and
// opening the store again, and a closed store refuses work.
func testDurable(t *testing.T, open func() store.Store) {
	s := open()
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		ev := store.Event{ProcessID: "d", ID: "00000000-0000-7000-8000-000000000001", Data: json.RawMessage(`{"x":1}`), CreatedAt: time.Now().UTC()}
		if _, err := tx.AppendEvent(&ev, "o", "r1"); err != nil {
			return err
		}
		return tx.Set([]byte("d/k"), []byte("v:d/k"), 0)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"Update": s.Update(ctx, func(store.Tx) error { return nil }),
		"View":   s.View(ctx, func(store.Tx) error { return nil }),
		"Ping":   s.Ping(ctx),
	} {
		if !errors.Is(err, store.ErrStoreClosed) {
			t.Errorf("%s on a closed store: %v, want ErrStoreClosed", name, err)
		}
	}
	s = opened(t, open)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, s, "d/", ""); len(got) != 1 {
		t.Fatalf("after reopening: %q", got)
	}
	view(t, s, func(tx store.Tx) error {
		ev, err := tx.Event("d", 1)
		if err != nil || string(ev.Data) != `{"x":1}` {
			return fmt.Errorf("event after reopening: %+v %v", ev, err)
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error { // the dedup name is remembered too
		ev := store.Event{ProcessID: "d", ID: "00000000-0000-7000-8000-000000000002", Data: json.RawMessage(`1`), CreatedAt: time.Now().UTC()}
		if _, err := tx.AppendEvent(&ev, "o", "r1"); !errors.Is(err, store.ErrDuplicate) {
			return fmt.Errorf("repeated append after reopening: %v", err)
		}
		return nil
	})
}

// testPartitioning: a store that is not Shared keeps none; a Shared one
// keeps the first count until it is set, each change with the next epoch,
// and transactions read it.
func testPartitioning(t *testing.T, open func() store.Store) {
	s := opened(t, open)
	read := func() store.Partitioning {
		var p store.Partitioning
		view(t, s, func(tx store.Tx) error {
			var err error
			p, err = tx.Partitioning()
			return err
		})
		return p
	}
	sh, ok := s.(store.Shared)
	if !ok {
		if p := read(); p != (store.Partitioning{}) {
			t.Fatalf("an embedded store reports %+v", p)
		}
		return
	}
	ctx := context.Background()
	if p := read(); p != (store.Partitioning{}) {
		t.Fatalf("fresh: %+v", p)
	}
	if p, err := sh.InitPartitioning(ctx, 3); err != nil || p != (store.Partitioning{Count: 3, Epoch: 1}) {
		t.Fatalf("init 3: %+v %v", p, err)
	}
	if p, err := sh.InitPartitioning(ctx, 5); err != nil || p != (store.Partitioning{Count: 3, Epoch: 1}) {
		t.Fatalf("init 5 after 3: %+v %v", p, err)
	}
	if p, err := sh.SetPartitioning(ctx, 4); err != nil || p != (store.Partitioning{Count: 4, Epoch: 2}) {
		t.Fatalf("set 4: %+v %v", p, err)
	}
	if p, err := sh.SetPartitioning(ctx, 4); err != nil || p != (store.Partitioning{Count: 4, Epoch: 2}) {
		t.Fatalf("set 4 again: %+v %v", p, err)
	}
	if _, err := sh.SetPartitioning(ctx, 0); err == nil {
		t.Fatal("set 0: no error")
	}
	if p := read(); p != (store.Partitioning{Count: 4, Epoch: 2}) {
		t.Fatalf("read: %+v", p)
	}
}

// BenchmarkAppend measures appends straight on a store: 64 writers, each
// append its own Update (as a request's), over 100 processes. It reports
// appends/s; ns/op is per append.
func BenchmarkAppend(b *testing.B, open func() store.Store) {
	s := open()
	defer s.Close()
	var n atomic.Int64
	b.SetParallelism(64 / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			err := s.Update(context.Background(), func(tx store.Tx) error {
				ev := store.Event{ProcessID: fmt.Sprint("proc-", i%100), ID: fmt.Sprintf("00000000-0000-7000-8000-%012d", i),
					Type: "tick", Data: json.RawMessage(`{"type":"tick","n":1}`), CreatedAt: time.Now().UTC()}
				_, err := tx.AppendEvent(&ev, "bench", fmt.Sprint("r", i))
				return err
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
}
