package buffer

import (
	"bytes"
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

// The tail must hand out exactly what a read from Badger would: the same
// records, fields and order.
func TestTailMatchesBadger(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, 2)
	var want []*Record
	for i := range 20 {
		r := newRecord(0, fmt.Sprintf("k%d", i%3), 10+i)
		r.IdempotencyKey = fmt.Sprintf("idem-%d", i)
		r.Header = http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}}
		mustAppend(t, q, r)
		want = append(want, r)
	}
	tl := &q.(*queue).tails[0]
	if len(tl.recs) != len(want) {
		t.Fatalf("tail holds %d records before the read, want %d", len(tl.recs), len(want))
	}
	fromTail := mustRead(t, q, 0, 0, 100)
	if len(tl.recs) != 0 {
		t.Fatalf("tail holds %d records after the read took them all", len(tl.recs))
	}
	if len(fromTail) != len(want) {
		t.Fatalf("tail read %d records, want %d", len(fromTail), len(want))
	}
	if again := mustRead(t, q, 0, 0, 100); len(again) != len(want) {
		t.Fatalf("second read (from Badger) %d records, want %d", len(again), len(want))
	} else {
		for i := range again {
			assertSameRecord(t, fromTail[i], again[i])
		}
	}
	for i, r := range fromTail {
		if r.Seq != uint64(i+1) || r.ID != want[i].ID {
			t.Fatalf("record %d: seq %d id %s, want seq %d id %s", i, r.Seq, r.ID, i+1, want[i].ID)
		}
		if r == want[i] {
			t.Fatalf("record %d: the tail handed out Append's own *Record", i)
		}
	}
}

func assertSameRecord(t *testing.T, a, b *Record) {
	t.Helper()
	if a.ID != b.ID || a.Partition != b.Partition || a.Seq != b.Seq || a.Key != b.Key ||
		a.IdempotencyKey != b.IdempotencyKey || a.Method != b.Method || a.Path != b.Path ||
		a.RawQuery != b.RawQuery || !reflect.DeepEqual(a.Header, b.Header) || !bytes.Equal(a.Body, b.Body) ||
		!a.ReceivedAt.Equal(b.ReceivedAt) || a.Attempts != b.Attempts || !a.NextAttemptAt.Equal(b.NextAttemptAt) ||
		a.LastError != b.LastError {
		t.Fatalf("tail and Badger differ:\n tail   %+v\n badger %+v", a, b)
	}
}

// A reader far behind reads from Badger and switches to the tail when it
// reaches it; every record comes once, in order, whatever the tail dropped.
func TestTailBehindReader(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	n := tailMaxRecords + 300
	for i := range n {
		mustAppend(t, q, newRecord(0, "k", 10+i%7))
	}
	var cursor uint64
	for cursor < uint64(n) {
		got := mustRead(t, q, 0, cursor, 100)
		if len(got) == 0 {
			t.Fatalf("no records after %d of %d", cursor, n)
		}
		for _, r := range got {
			if r.Seq != cursor+1 {
				t.Fatalf("read seq %d after %d", r.Seq, cursor)
			}
			cursor = r.Seq
		}
	}
	if got := mustRead(t, q, 0, cursor, 100); len(got) != 0 {
		t.Fatalf("read %d records past the end", len(got))
	}
}

// A record changed (nack, ack) before it was read from the tail must be read
// as it now is, not as it was appended.
func TestTailForgetsChangedRecords(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	a, b, c := newRecord(0, "k1", 50), newRecord(0, "k2", 60), newRecord(0, "k3", 70)
	mustAppend(t, q, a, b, c)
	b.Attempts, b.LastError = 2, "503 from backend"
	if err := q.Nack(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(t.Context(), c, Outcome{Status: StatusDelivered, ResponseStatus: 200}); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, q, 0, 0, 10)
	if len(got) != 2 || got[0].ID != a.ID || got[1].ID != b.ID || got[1].Attempts != 2 || got[1].LastError != "503 from backend" {
		t.Fatalf("after nack and ack: %+v", got)
	}
}

func TestTailBounds(t *testing.T) {
	var tl tail
	big := bytes.Repeat([]byte{'x'}, tailMaxBytes/4)
	for i := range 10 {
		tl.push([]*Record{{Seq: uint64(i + 1), Body: big}})
	}
	if tl.bytes > tailMaxBytes || len(tl.recs) == 0 || tl.recs[len(tl.recs)-1].Seq != 10 {
		t.Fatalf("tail holds %d bytes in %d records (last %d), bound %d", tl.bytes, len(tl.recs), tl.recs[len(tl.recs)-1].Seq, tailMaxBytes)
	}
	// A gap empties it: Seq 12 cannot follow 10.
	tl.push([]*Record{{Seq: 12}})
	if len(tl.recs) != 1 || tl.recs[0].Seq != 12 {
		t.Fatalf("after a gap the tail holds %d records starting at %d", len(tl.recs), tl.recs[0].Seq)
	}
	if got := tl.take(10, 10, 0); got != nil {
		t.Fatalf("take after 10 returned %d records across a gap", len(got))
	}
	if got := tl.take(11, 10, 0); len(got) != 1 || got[0].Seq != 12 || len(tl.recs) != 0 || tl.bytes != 0 {
		t.Fatalf("take after 11: %v, left %d records %d bytes", got, len(tl.recs), tl.bytes)
	}
}
