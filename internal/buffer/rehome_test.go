package buffer

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/flowedge/flowedge/internal/partition"
)

func openRouted(t *testing.T, dir string, n int) Queue {
	t.Helper()
	q, err := Open(Options{Path: dir, Partitions: n, Route: partition.OfString})
	if err != nil {
		t.Fatalf("Open with %d partitions: %v", n, err)
	}
	return q
}

// readAll reads partition p to its end.
func readAll(t *testing.T, q Queue, p int) []*Record {
	t.Helper()
	var out []*Record
	var after uint64
	for {
		recs := mustRead(t, q, p, after, 1000)
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		after = recs[len(recs)-1].Seq
	}
}

// A resize moves every queued record, dead letter and park to the partition
// that now owns its key, keeping each key's order, and nothing is lost.
func TestRehomeOnResize(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const keys, perKey = 60, 5
	q := openRouted(t, dir, 3)
	order := map[string][]string{} // key → ids in append order
	var all []*Record
	for i := range keys * perKey {
		key := fmt.Sprintf("proc-%d", i%keys)
		r := newRecord(partition.OfString(key, 3), key, 20+i%9)
		mustAppend(t, q, r)
		order[key] = append(order[key], r.ID)
		all = append(all, r)
	}
	// Two dead letters: one parks its key, one does not.
	parkedRec, skippedRec := all[0], all[1]
	if err := q.DeadLetter(ctx, parkedRec, Outcome{LastError: "421"}, true); err != nil {
		t.Fatal(err)
	}
	if err := q.DeadLetter(ctx, skippedRec, Outcome{LastError: "gave up"}, false); err != nil {
		t.Fatal(err)
	}
	wantBytes := q.Stats().Bytes
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	for _, n := range []int{4, 2, 2, 5} { // grow, shrink, unchanged, grow
		q := openRouted(t, dir, n)
		st := q.Stats()
		if st.Bytes != wantBytes {
			t.Errorf("n=%d: Stats.Bytes %d, want %d", n, st.Bytes, wantBytes)
		}
		seen := map[string][]string{}
		total := 0
		for p := range n {
			recs := readAll(t, q, p)
			if st.Partitions[p].Records != len(recs) {
				t.Errorf("n=%d partition %d: counter says %d records, read %d", n, p, st.Partitions[p].Records, len(recs))
			}
			for _, r := range recs {
				if want := partition.OfString(r.Key, n); want != p {
					t.Fatalf("n=%d: record %s of key %s in partition %d, its key maps to %d", n, r.ID, r.Key, p, want)
				}
				seen[r.Key] = append(seen[r.Key], r.ID)
				total++
			}
		}
		if total != keys*perKey-2 {
			t.Fatalf("n=%d: %d queued records, want %d", n, total, keys*perKey-2)
		}
		for key, ids := range order {
			var want []string
			for _, id := range ids {
				if id != parkedRec.ID && id != skippedRec.ID {
					want = append(want, id)
				}
			}
			if fmt.Sprint(seen[key]) != fmt.Sprint(want) {
				t.Fatalf("n=%d key %s: order %v, want %v", n, key, seen[key], want)
			}
		}
		// Dead letters and the park followed their keys.
		dead, _, err := q.DeadLetters(-1, "", 100)
		if err != nil || len(dead) != 2 {
			t.Fatalf("n=%d: dead letters %d, %v", n, len(dead), err)
		}
		for _, d := range dead {
			if want := partition.OfString(d.Record.Key, n); d.Record.Partition != want {
				t.Errorf("n=%d: dead letter %s in partition %d, want %d", n, d.Record.ID, d.Record.Partition, want)
			}
			if got, err := q.Lookup(d.Record.ID); err != nil || got.Status != StatusDead {
				t.Errorf("n=%d: Lookup(%s) = %+v, %v", n, d.Record.ID, got, err)
			}
		}
		pp := partition.OfString(parkedRec.Key, n)
		parked, err := q.Parked(pp)
		if err != nil || parked[parkedRec.Key] != parkedRec.ID {
			t.Errorf("n=%d: parks of partition %d = %v, %v; want %s parked by %s", n, pp, parked, err, parkedRec.Key, parkedRec.ID)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// A replay after the resizes goes back into the partition that owns
	// the key now, ahead of the key's later records.
	q = openRouted(t, dir, 5)
	defer q.Close()
	rec, err := q.Replay(ctx, parkedRec.ID)
	if err != nil {
		t.Fatal(err)
	}
	p := partition.OfString(parkedRec.Key, 5)
	if rec.Partition != p {
		t.Fatalf("replayed into partition %d, want %d", rec.Partition, p)
	}
	var keyOrder []string
	for _, r := range readAll(t, q, p) {
		if r.Key == parkedRec.Key {
			keyOrder = append(keyOrder, r.ID)
		}
	}
	if fmt.Sprint(keyOrder) != fmt.Sprint(order[parkedRec.Key]) {
		t.Fatalf("after replay key %s reads %v, want %v", parkedRec.Key, keyOrder, order[parkedRec.Key])
	}
}

// A move interrupted part-way (a crash between two of its transactions)
// leaves a consistent queue, and the next Open finishes it: nothing lost,
// nothing twice, every key in order.
func TestRehomeInterrupted(t *testing.T) {
	dir := t.TempDir()
	const keys, perKey = 200, 10
	q := openRouted(t, dir, 3)
	order := map[string][]string{}
	for i := range keys * perKey {
		key := fmt.Sprintf("k-%d", i%keys)
		r := newRecord(partition.OfString(key, 3), key, 16)
		mustAppend(t, q, r)
		order[key] = append(order[key], r.ID)
	}
	wantBytes := q.Stats().Bytes
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	tune := defaultTuning()
	tune.rehomeFailAfter = rehomeBatch // stop after the first transaction of moves
	if _, err := openTuned(Options{Path: dir, Partitions: 5, Route: partition.OfString}, tune); !errors.Is(err, errRehomeInterrupted) {
		t.Fatalf("interrupted Open: %v, want errRehomeInterrupted", err)
	}

	q = openRouted(t, dir, 5)
	defer q.Close()
	if got := q.Stats().Bytes; got != wantBytes {
		t.Errorf("Stats.Bytes %d, want %d", got, wantBytes)
	}
	seen := map[string][]string{}
	total := 0
	for p := range 5 {
		for _, r := range readAll(t, q, p) {
			if want := partition.OfString(r.Key, 5); want != p {
				t.Fatalf("record %s of %s in partition %d, its key maps to %d", r.ID, r.Key, p, want)
			}
			seen[r.Key] = append(seen[r.Key], r.ID)
			total++
		}
	}
	if total != keys*perKey {
		t.Fatalf("%d records after the finished move, want %d", total, keys*perKey)
	}
	for key, ids := range order {
		if fmt.Sprint(seen[key]) != fmt.Sprint(ids) {
			t.Fatalf("key %s: %v, want %v", key, seen[key], ids)
		}
	}
}
