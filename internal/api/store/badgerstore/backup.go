package badgerstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/flowedge/flowedge/internal/api/store"
)

// Backuper is a store that can write a full backup of itself.
type Backuper interface {
	// Backup writes every live key (Badger's backup stream) to w. It reads
	// a consistent snapshot and may run while the store serves.
	Backup(ctx context.Context, w io.Writer) error
}

var _ Backuper = (*badgerStore)(nil)

// Backup implements Backuper. ctx is checked before the stream starts
// (Badger's stream cannot be cancelled part-way; a cancelled writer ends it).
func (s *badgerStore) Backup(ctx context.Context, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.db.Backup(w, 0); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	return nil
}

// ErrNotEmpty is returned by Restore for a directory that holds a store.
var ErrNotEmpty = errors.New("store: the directory to restore into already holds a store")

// Restore loads a backup written by Backup into a new store in dir, which
// must not hold a store (no Badger file; other files, such as the objects/
// directory of local object storage, may be there): a restore never merges
// into live data. The store is synced and closed before Restore returns.
func Restore(dir string, r io.Reader) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: restore into %s: %w", dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		if n == "MANIFEST" || n == "KEYREGISTRY" || strings.HasSuffix(n, ".sst") || strings.HasSuffix(n, ".vlog") || strings.HasSuffix(n, ".mem") {
			return fmt.Errorf("%w: %s has %s", ErrNotEmpty, dir, n)
		}
	}
	st, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	bs := st.(*badgerStore)
	// 256 pending writes: Badger's own default in its restore tool.
	loadErr := bs.db.Load(r, 256)
	syncErr := bs.db.Sync()
	if err := errors.Join(loadErr, syncErr, st.Close()); err != nil {
		return fmt.Errorf("store: restore into %s: %w", dir, err)
	}
	return nil
}

var _ store.Store = (*badgerStore)(nil)
