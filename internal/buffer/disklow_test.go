package buffer

import (
	"context"
	"errors"
	"testing"
)

// TestAppendsRefusedWhenDiskLow: with less free space on the filesystem
// than the reserve, an append stores nothing and fails with ErrDiskLow (an
// ErrFull); acks go on; with room again, appends are taken.
//
// Regression: the edge on a filesystem that filled up (a 40 MiB tmpfs, the
// queue's max_bytes far above it) died with SIGBUS in a Badger compaction
// writing through a mapped table, and again at each restart while the
// filesystem was full.
func TestAppendsRefusedWhenDiskLow(t *testing.T) {
	dir := t.TempDir()
	queued := newRecord(0, "k", 10)
	q := openTest(t, dir, 1)
	mustAppend(t, q, queued)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTuneTest(t, Options{Path: dir, Partitions: 1}, func(tu *tuning) {
		tu.minFree = 1 << 62 // more than any filesystem has free
	})
	r := newRecord(0, "k", 10)
	_, err := q.Append(context.Background(), []*Record{r})
	if !errors.Is(err, ErrDiskLow) || !errors.Is(err, ErrFull) {
		t.Fatalf("Append with the disk low: %v, want %v (an %v)", err, ErrDiskLow, ErrFull)
	}
	got := mustRead(t, q, 0, 0, 10)
	if len(got) != 1 || got[0].ID != queued.ID {
		t.Fatalf("read %v with the disk low, want only %s (the refused append not stored)", ids(got), queued.ID)
	}
	if err := q.Ack(context.Background(), got[0], Outcome{Status: StatusDelivered, ResponseStatus: 200}); err != nil {
		t.Fatalf("Ack with the disk low: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// The same directory with the default reserve, which this filesystem
	// has free: appends are taken.
	q = openTest(t, dir, 1)
	mustAppend(t, q, newRecord(0, "k", 10))
}
