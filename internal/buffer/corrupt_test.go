package buffer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// rawSet writes values under keys directly with Badger, bypassing the
// queue, as a disk fault or a bug would.
func rawSet(t *testing.T, dir string, kv map[string][]byte) {
	t.Helper()
	db, err := badger.Open(badgerOptions(dir, defaultTuning(), discardLogger(), false))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for k, v := range kv {
			if err := txn.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// fillCorrupt makes a queue of 6 records in partition 0 and one dead
// letter, then damages records 2 (garbage) and 4 (truncated) on disk.
func fillCorrupt(t *testing.T, dir string) []*Record {
	t.Helper()
	q, err := Open(Options{Path: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*Record
	for range 6 {
		recs = append(recs, newRecord(0, "k", 100))
	}
	mustAppend(t, q, recs...)
	if err := q.DeadLetter(context.Background(), recs[5], Outcome{LastError: "x"}, false); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// The six were appended together: one segment. Damage two of its
	// records in place; the others must survive.
	vals := make([][]byte, len(recs))
	for i, r := range recs {
		vals[i] = encodeRecord(r)
	}
	vals[1] = []byte("this is not a record")
	vals[3] = vals[3][:len(vals[3])/2]
	if recs[0].loc.seg != recs[0].Seq || recs[5].loc.seg != recs[0].Seq {
		t.Fatalf("records not in one segment: %+v %+v", recs[0].loc, recs[5].loc)
	}
	rawSet(t, dir, map[string][]byte{
		string(segKey(0, recs[0].Seq)): encodeSegment(vals),
	})
	return recs
}

func TestCorruptRecordQuarantined(t *testing.T) {
	dir := t.TempDir()
	recs := fillCorrupt(t, dir)
	q := openTest(t, dir, 2)
	for round := range 2 {
		got := mustRead(t, q, 0, 0, 100)
		want := []string{recs[0].ID, recs[2].ID, recs[4].ID}
		if fmt.Sprint(ids(got)) != fmt.Sprint(want) {
			t.Fatalf("round %d: Read = %v, want %v", round, ids(got), want)
		}
		st := q.Stats()
		if st.Quarantined != 2 || st.Partitions[0].Records != 3 {
			t.Fatalf("round %d: stats %+v", round, st)
		}
	}
	// The quarantined record's id is unknown now; the others are fine.
	if _, err := q.Lookup(recs[1].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of quarantined: %v", err)
	}
	if d, err := q.Lookup(recs[2].ID); err != nil || d.Status != StatusQueued {
		t.Fatalf("Lookup: %+v %v", d, err)
	}
	// The count survives a restart.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, 2)
	if st := q.Stats(); st.Quarantined != 2 || st.Partitions[0].Records != 3 {
		t.Fatalf("after restart: %+v", st)
	}
}

func TestCorruptDeadLetterQuarantined(t *testing.T) {
	dir := t.TempDir()
	recs := fillCorrupt(t, dir)
	rawSet(t, dir, map[string][]byte{string(seqKey(prefixDead, 0, recs[5].Seq)): {deadV1, 0xff}})
	q := openTest(t, dir, 2)
	page, _, err := q.DeadLetters(-1, "", 10)
	if err != nil || len(page) != 0 {
		t.Fatalf("DeadLetters: %+v, %v", page, err)
	}
	if st := q.Stats(); st.Quarantined != 1 || st.Partitions[0].DeadLetters != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestCheckAndExport(t *testing.T) {
	dir := t.TempDir()
	recs := fillCorrupt(t, dir)
	rep, err := Check(dir)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	t.Logf("report: %+v", rep)
	if rep.Corrupt != 2 || rep.Quarantined != 2 || rep.Records != 3 || rep.DeadLetters != 1 || len(rep.Partitions) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	p0 := rep.Partitions[0]
	if p0.Partition != 0 || p0.Records != 3 || p0.Corrupt != 2 || p0.FirstSeq != recs[0].Seq ||
		p0.LastSeq != recs[4].Seq || p0.NextSeq != 7 || !p0.Oldest.Equal(recs[0].ReceivedAt) {
		t.Fatalf("partition 0: %+v", p0)
	}
	if len(rep.Problems) != 1 {
		t.Fatalf("problems: %q", rep.Problems)
	}
	// A second check finds nothing new and the counters agree.
	rep, err = Check(dir)
	if err != nil || rep.Corrupt != 0 || rep.Quarantined != 2 || len(rep.Problems) != 0 {
		t.Fatalf("second Check: %+v, %v", rep, err)
	}
	q := openTest(t, dir, 2)
	if st := q.Stats(); st.Partitions[0].Records != 3 || st.Quarantined != 2 {
		t.Fatalf("stats after Check: %+v", st)
	}
	r := newRecord(1, "k", 5)
	r.Header = http.Header{"A": {"1", "2"}}
	r.IdempotencyKey = "i"
	mustAppend(t, q, r)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := Export(dir, &buf); err != nil {
		t.Fatalf("Export: %v", err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 4 {
		t.Fatalf("%d lines exported", len(lines))
	}
	last := lines[3]
	for _, k := range []string{"id", "partition", "seq", "key", "method", "path", "query", "headers", "body", "received_at", "attempts"} {
		if _, ok := last[k]; !ok {
			t.Fatalf("field %s missing in %v", k, last)
		}
	}
	if last["id"] != r.ID || last["partition"] != 1.0 || last["body"] != "eHh4eHg=" || last["method"] != "POST" {
		t.Fatalf("last line: %v", last)
	}
	if _, err := time.Parse(time.RFC3339Nano, last["received_at"].(string)); err != nil {
		t.Fatalf("received_at: %v", err)
	}
}

func TestExportSkipsCorrupt(t *testing.T) {
	dir := t.TempDir()
	fillCorrupt(t, dir)
	var buf bytes.Buffer
	err := Export(dir, &buf)
	if !errors.Is(err, ErrCorruptSkipped) {
		t.Fatalf("Export: %v, want ErrCorruptSkipped", err)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 3 {
		t.Fatalf("%d lines exported, want 3", n)
	}
}

func TestCheckMissingDir(t *testing.T) {
	if _, err := Check(t.TempDir() + "/nope"); err == nil {
		t.Fatal("Check of a missing dir succeeded")
	}
}

// TestCorruptCountersRebuilt: unreadable counters are rebuilt by a scan of
// the partition at Open instead of failing to start.
func TestCorruptCountersRebuilt(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(Options{Path: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	recs := []*Record{newRecord(1, "k", 10), newRecord(1, "k", 20), newRecord(1, "k", 30)}
	mustAppend(t, q, recs...)
	if err := q.DeadLetter(context.Background(), recs[0], Outcome{LastError: "x"}, false); err != nil {
		t.Fatal(err)
	}
	want := q.Stats()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	rawSet(t, dir, map[string][]byte{string(metaKey(1)): []byte("garbage"), string(globalKey): {9}})
	q = openTest(t, dir, 2)
	got := q.Stats()
	if got.Partitions[1].Records != 2 || got.Partitions[1].Bytes != want.Partitions[1].Bytes ||
		got.Partitions[1].DeadLetters != 1 || got.Bytes != want.Bytes {
		t.Fatalf("rebuilt stats %+v, want %+v", got, want)
	}
	r := newRecord(1, "k", 1)
	mustAppend(t, q, r)
	if r.Seq != 4 {
		t.Fatalf("Seq after rebuild = %d, want 4", r.Seq)
	}
}

// TestEmptyMemtableAfterPowerCut pins a crash loop: a power cut can leave a
// memtable file whose name reached the disk before any of its contents (a
// new memtable is a new file extended to its size), and Badger refuses to
// open a directory holding a zero-length one ("Create a new file"), so the
// edge could not restart and deliver what it had acknowledged. Open removes
// such files (they hold nothing) and serves the queue.
func TestEmptyMemtableAfterPowerCut(t *testing.T) {
	dir := t.TempDir()
	q := openTest(t, dir, 1)
	rec := newRecord(0, "k", 10)
	mustAppend(t, q, rec)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, 1)
	got := mustRead(t, q, 0, 0, 10)
	if len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("after reopening: %d records, want the one appended", len(got))
	}
	if _, err := os.Stat(filepath.Join(dir, "00099.mem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty memtable file still there: %v", err)
	}
}
