package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fixture testdata/v1queue was written by the queue of the previous
// release (one Badger entry per record, an id index, unscoped idempotency
// keys) with testdata/v1queue.gen.txt: 12 records over 2 partitions,
// keys p0..p3 (p0, p2 in partition 0); record 0 delivered (outcome kept),
// record 1 nacked twice, record 2 dead-lettered parking p2, record 3
// dead-lettered without a park; records 1 and 4..11 queued.

func fixtureID(i int) string {
	return fmt.Sprintf("0190b1c2-7d3e-7f00-8000-0000000000%c%c", 'a'+i/10, '0'+i%10)
}

// fixtureTTL keeps the fixture's outcome, finished when the fixture was
// written, from passing the outcome age limit as the fixture grows old: the
// age trim would race the tests' lookups of it.
const fixtureTTL = 100 * 365 * 24 * time.Hour

func fixtureRoute(key string, n int) int {
	if key[len(key)-1]%2 == 0 {
		return 0
	}
	return 1 % n
}

// copyFixture copies testdata/v1queue into a fresh directory (Open writes).
func copyFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir("testdata/v1queue")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("testdata/v1queue", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUpgradeFromV1: a queue directory written by the previous release is
// opened in place and every queued record, dead letter and park is served:
// old records are read merged with new segments in Seq order, acknowledged,
// replayed and discarded like new ones, and the queue drains to empty.
func TestUpgradeFromV1(t *testing.T) {
	dir := copyFixture(t)
	ctx := context.Background()
	q := openTest(t, dir, 2, func(o *Options) { o.Route = fixtureRoute; o.OutcomeTTL = fixtureTTL })

	st := q.Stats()
	if st.Partitions[0].Records != 4 || st.Partitions[1].Records != 5 ||
		st.Partitions[0].DeadLetters != 1 || st.Partitions[1].DeadLetters != 1 {
		t.Fatalf("stats of the old queue: %+v", st)
	}
	if d, err := q.Lookup(fixtureID(0)); err != nil || d.Status != StatusDelivered || d.Outcome.ResponseStatus != 201 {
		t.Fatalf("old outcome: %+v, %v", d, err)
	}
	if d, err := q.Lookup(fixtureID(4)); err != nil || d.Status != StatusQueued || d.Record.Seq == 0 {
		t.Fatalf("old queued record: %+v, %v", d, err)
	}
	if p, err := q.Parked(0); err != nil || p["p2"] != fixtureID(2) {
		t.Fatalf("old park: %v, %v", p, err)
	}
	dead, _, err := q.DeadLetters(-1, "", 10)
	if err != nil || len(dead) != 2 || dead[0].Record.ID != fixtureID(2) || !dead[0].Parked ||
		dead[1].Record.ID != fixtureID(3) || dead[1].Outcome.LastError != "421" {
		t.Fatalf("old dead letters: %+v, %v", dead, err)
	}

	// New records go after the old ones, in new segments.
	n0 := newRecord(0, "p0", 5)
	n1 := newRecord(1, "p1", 5)
	mustAppend(t, q, n0, n1)

	got0 := mustRead(t, q, 0, 0, 100)
	got1 := mustRead(t, q, 1, 0, 100)
	want0 := []string{fixtureID(4), fixtureID(6), fixtureID(8), fixtureID(10), n0.ID}
	want1 := []string{fixtureID(1), fixtureID(5), fixtureID(7), fixtureID(9), fixtureID(11), n1.ID}
	if fmt.Sprint(ids(got0)) != fmt.Sprint(want0) || fmt.Sprint(ids(got1)) != fmt.Sprint(want1) {
		t.Fatalf("read after upgrade:\n %v\n %v", ids(got0), ids(got1))
	}
	if r := got1[0]; r.Attempts != 2 || r.LastError != "503" || string(r.Body) != `{"n":1}` || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("old nacked record: %+v", r)
	}
	// Nack an old record, read it back, then ack everything.
	got0[0].Attempts, got0[0].LastError = 1, "timeout"
	if err := q.Nack(ctx, got0[0]); err != nil {
		t.Fatal(err)
	}
	if r := mustRead(t, q, 0, 0, 1)[0]; r.Attempts != 1 || r.LastError != "timeout" {
		t.Fatalf("after nack: %+v", r)
	}
	for _, r := range append(got0, got1...) {
		if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 200}); err != nil {
			t.Fatalf("ack %s: %v", r.ID, err)
		}
	}
	// Dead letters: replay one (back into the queue, park lifted), discard the other.
	rec, err := q.Replay(ctx, fixtureID(2))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := q.Parked(0); len(p) != 0 {
		t.Fatalf("park not lifted: %v", p)
	}
	if got := mustRead(t, q, 0, 0, 10); len(got) != 1 || got[0].ID != rec.ID {
		t.Fatalf("replayed: %v", ids(got))
	}
	if err := q.Ack(ctx, rec, Outcome{Status: StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	if err := q.Discard(ctx, fixtureID(3)); err != nil {
		t.Fatal(err)
	}
	st = q.Stats()
	if st.Bytes != 0 || st.Partitions[0].Records+st.Partitions[1].Records != 0 ||
		st.Partitions[0].DeadLetters+st.Partitions[1].DeadLetters != 0 {
		t.Fatalf("not drained: %+v", st)
	}
	// And it stays so over a restart.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTest(t, dir, 2, func(o *Options) { o.Route = fixtureRoute })
	if st := q.Stats(); st.Bytes != 0 || st.Partitions[0].Records+st.Partitions[1].Records != 0 {
		t.Fatalf("after restart: %+v", st)
	}
	if got := mustRead(t, q, 0, 0, 10); len(got) != 0 {
		t.Fatalf("records back after restart: %v", ids(got))
	}
	if d, err := q.Lookup(fixtureID(3)); err != nil || d.Status != StatusDead {
		t.Fatalf("discarded: %+v, %v", d, err)
	}
}

// TestUpgradeResize: the old layout is moved by a resize like the new one.
func TestUpgradeResize(t *testing.T) {
	dir := copyFixture(t)
	q := openTest(t, dir, 3, func(o *Options) { o.Route = fixtureRoute; o.OutcomeTTL = fixtureTTL })
	total := 0
	for p := range 3 {
		for _, r := range mustRead(t, q, p, 0, 100) {
			if fixtureRoute(r.Key, 3) != p {
				t.Fatalf("record %s of %s in partition %d", r.ID, r.Key, p)
			}
			total++
		}
	}
	if total != 9 {
		t.Fatalf("%d records after resize, want 9", total)
	}
}

// TestCheckExportBothLayouts: edge buffer check / export on a directory of
// the previous release and on one holding both layouts.
func TestCheckExportBothLayouts(t *testing.T) {
	dir := copyFixture(t)
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 9 || rep.DeadLetters != 2 || rep.Parked != 1 || rep.Outcomes != 1 || rep.Corrupt != 0 || len(rep.Problems) != 0 {
		t.Fatalf("check of the old layout: %+v", rep)
	}
	var out bytes.Buffer
	if err := Export(dir, &out); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 9 || !strings.Contains(out.String(), fixtureID(11)) {
		t.Fatalf("export of the old layout: %d lines\n%s", n, out.String())
	}

	// Both layouts: new segments after the old records.
	q := openTest(t, dir, 2, func(o *Options) { o.Route = fixtureRoute; o.OutcomeTTL = fixtureTTL })
	mustAppend(t, q, newRecord(0, "p0", 5), newRecord(0, "p2", 5), newRecord(1, "p1", 5))
	got := mustRead(t, q, 0, 0, 100)
	if err := q.Ack(context.Background(), got[len(got)-1], Outcome{Status: StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err = Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The old layout's outcome ('o') and the new one ('0') both count.
	if rep.Records != 11 || rep.DeadLetters != 2 || rep.Outcomes != 2 || rep.Corrupt != 0 || len(rep.Problems) != 0 {
		t.Fatalf("check of both layouts: %+v", rep)
	}
	out.Reset()
	if err := Export(dir, &out); err != nil && !errors.Is(err, ErrCorruptSkipped) {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 11 {
		t.Fatalf("export of both layouts: %d lines", n)
	}
}

// TestUpgradeOutcomesTrimmedFirst: outcomes kept by the previous releases
// (o <id>) are older than every new one (0 <id>): the outcome budget drops
// them first, and they are counted in the check.
func TestUpgradeOutcomesTrimmedFirst(t *testing.T) {
	const budget = 64 << 10
	dir := copyFixture(t)
	q := openTuneTest(t, Options{Path: dir, Partitions: 2, Route: fixtureRoute, OutcomeMaxBytes: budget, OutcomeTTL: fixtureTTL},
		func(tu *tuning) { tu.budgetInterval = 50 * time.Millisecond })
	if _, err := q.Lookup(fixtureID(0)); err != nil {
		t.Fatalf("outcome of the previous release: %v", err)
	}
	recs := ackFull(t, q, "p0", 100, time.Time{})
	waitUntil(t, 10*time.Second, "outcomes within budget", func() bool { return q.Stats().OutcomeBytes <= budget })
	if _, err := q.Lookup(fixtureID(0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("outcome of the previous release after the trim: %v, want ErrNotFound", err)
	}
	if d, err := q.Lookup(recs[99].ID); err != nil || d.Status != StatusDelivered {
		t.Fatalf("newest outcome: %+v, %v", d, err)
	}
}
