package badgerstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/flowedge/flowedge/internal/api/store"
)

// TestBackupRestore: a backup taken while the store serves, restored into
// an empty directory, holds every key with its value; a deleted key stays
// deleted; a non-empty directory is refused.
func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	src := openTestStore(t, t.TempDir())
	want := map[string]string{}
	for i := range 2000 {
		k, v := fmt.Sprintf("p/%05d", i), fmt.Sprintf("value-%d-%s", i, bytes.Repeat([]byte("x"), i%300))
		want[k] = v
		if err := src.Update(ctx, func(tx store.Tx) error { return tx.Set([]byte(k), []byte(v), 0) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Update(ctx, func(tx store.Tx) error { return tx.Delete([]byte("p/00007")) }); err != nil {
		t.Fatal(err)
	}
	delete(want, "p/00007")
	var buf bytes.Buffer
	if err := src.(Backuper).Backup(ctx, &buf); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(t.TempDir(), "restored")
	if err := Restore(dst, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	r := openTestStore(t, dst)
	if err := r.View(ctx, func(tx store.Tx) error {
		return tx.Scan([]byte("p/"), nil, func(k, v []byte) (bool, error) {
			got[string(k)] = string(v)
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("restored %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %s: restored %.20q, want %.20q", k, got[k], v)
		}
	}

	// A directory with a store is refused, even a closed one.
	if err := Restore(dst, bytes.NewReader(buf.Bytes())); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore into a directory with a store: %v", err)
	}
	// Other files (local object storage's objects/) do not count.
	other := t.TempDir()
	os.MkdirAll(filepath.Join(other, "objects", "meta"), 0o750)
	if err := Restore(other, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("restore beside objects/: %v", err)
	}
}
