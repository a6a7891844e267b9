package buffer

import (
	"context"
	"testing"
)

// TestSegmentCopies reads a segment a record at a time (served from the
// kept copy after the first Read) and checks that the copy follows the
// queue: finished records are skipped, retry state is applied, and once
// the segment is deleted (all its records final) its copy is gone too. A
// copy outliving its segment would hand out records already acknowledged,
// since their finished set leaves memory with the segment.
func TestSegmentCopies(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	q := openTest(t, dir, 1)
	var recs []*Record
	for range 8 {
		recs = append(recs, newRecord(0, "k", 10))
	}
	mustAppend(t, q, recs...) // one group commit: one segment
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, 1) // nothing in the in-memory tail: Reads go to Badger

	got := mustRead(t, q, 0, 0, 1)
	if len(got) != 1 {
		t.Fatalf("first Read: %d records", len(got))
	}
	first := got[0].Seq
	qq := q.(*queue)
	qq.mu.Lock()
	kept := qq.segs[0].ways[0]
	qq.mu.Unlock()
	if !kept.holds(first) || len(kept.recs) != 8 {
		t.Fatalf("segment not kept after a Read: %+v", kept)
	}

	all := mustRead(t, q, 0, 0, 100)
	if len(all) != 8 {
		t.Fatalf("Read all: %d records", len(all))
	}
	if err := q.Ack(ctx, all[1], Outcome{Status: StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	all[2].Attempts, all[2].LastError = 3, "timeout"
	if err := q.Nack(ctx, all[2]); err != nil {
		t.Fatal(err)
	}
	got = mustRead(t, q, 0, first, 2)
	if len(got) != 2 || got[0].ID != all[2].ID || got[1].ID != all[3].ID {
		t.Fatalf("Read after an Ack: %v, want %v", ids(got), ids(all[2:4]))
	}
	if got[0].Attempts != 3 || got[0].LastError != "timeout" {
		t.Fatalf("retry state not applied from the copy: attempts %d, last error %q", got[0].Attempts, got[0].LastError)
	}

	for i, r := range all {
		if i == 1 {
			continue
		}
		if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered}); err != nil {
			t.Fatal(err)
		}
	}
	for _, after := range []uint64{0, first, first + 3} {
		if got := mustRead(t, q, 0, after, 100); len(got) != 0 {
			t.Fatalf("Read(after %d) once every record is final: %v", after, ids(got))
		}
	}
	if s := q.Stats(); s.Partitions[0].Records != 0 {
		t.Fatalf("Stats: %d records", s.Partitions[0].Records)
	}
}
