package badgerstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/api/store/storetest"
)

func openTestStore(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestStoreGroupCommit: many concurrent Updates share transactions; one
// that fails after writing leaves nothing behind, while the others it was
// batched with commit; a panicking function is an error, not a crash; all
// of it is there after reopening.
func TestStoreGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	ctx := context.Background()
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, 600)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.Update(ctx, func(tx store.Tx) error {
				if err := tx.Set([]byte(fmt.Sprintf("k/%04d", i)), []byte("v"), 0); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return errBoom // after a write
				case 7:
					panic("fn panicked")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	check := func(s store.Store) {
		t.Helper()
		for i, err := range results {
			var got error
			_ = s.View(ctx, func(tx store.Tx) error { _, got = tx.Get([]byte(fmt.Sprintf("k/%04d", i))); return nil })
			switch i % 10 {
			case 3:
				if !errors.Is(err, errBoom) || !errors.Is(got, store.ErrNotFound) {
					t.Fatalf("%d: Update %v, key %v", i, err, got)
				}
			case 7:
				if err == nil || !errors.Is(got, store.ErrNotFound) {
					t.Fatalf("%d: Update %v, key %v", i, err, got)
				}
			default:
				if err != nil || got != nil {
					t.Fatalf("%d: Update %v, key %v", i, err, got)
				}
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(openTestStore(t, dir))
}

// TestStoreScan covers Scan's prefix, start key and early stop.
func TestStoreScan(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	ctx := context.Background()
	err := s.Update(ctx, func(tx store.Tx) error {
		for _, k := range []string{"a/1", "a/2", "a/3", "b/1", "a"} {
			if err := tx.Set([]byte(k), []byte(k), 0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	err = s.View(ctx, func(tx store.Tx) error {
		return tx.Scan([]byte("a/"), []byte("a/2"), func(k, v []byte) (bool, error) {
			got = append(got, string(k))
			return true, nil
		})
	})
	if err != nil || fmt.Sprint(got) != "[a/2 a/3]" {
		t.Fatalf("scan %v %v", got, err)
	}
	got = nil
	_ = s.View(ctx, func(tx store.Tx) error {
		return tx.Scan([]byte("a/"), nil, func(k, v []byte) (bool, error) {
			got = append(got, string(k))
			return len(got) < 2, nil
		})
	})
	if fmt.Sprint(got) != "[a/1 a/2]" {
		t.Fatalf("scan with stop %v", got)
	}
}

// TestStoreClosed: after Close, Update, View and Ping say so.
func TestStoreClosed(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	if err := s.Ping(context.Background()); err != nil {
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
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

// TestConformance runs the store suite on Badger.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) func() store.Store {
		dir := t.TempDir()
		return func() store.Store {
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// BenchmarkAppend: appends/s on Badger (fsync per commit, group commit).
func BenchmarkAppend(b *testing.B) {
	dir := b.TempDir()
	storetest.BenchmarkAppend(b, func() store.Store {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
