package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Sync that covers every acknowledged write.
//
// Badger keeps the write-ahead log of each memtable in its own file
// (NNNNN.mem, memory-mapped). DB.Sync syncs only the active memtable's file
// (and the value log): when a commit fills the memtable, Badger rotates it
// into the immutable list without syncing it, so records committed into it
// before the rotation are covered by no sync until its flush to a table
// completes, minutes later under a backlog. A power cut then loses them,
// though their Append returned.
//
// walSyncer closes that gap: it fdatasyncs the active memtable file and
// every rotated one not synced since it was rotated (once: Badger writes
// only to the newest). The value log holds only values over
// the value threshold (1 MiB: a segment that large); a flight that wrote
// one also gets DB.Sync, which syncs the value log. Measured against
// Badger's SyncWrites (a sync inside every write, holding up the committer)
// and against DB.Sync plus the rotated files: see docs/benchmarks.md.
//
// On Linux fdatasync writes back the pages of a file dirtied through a
// shared mapping, as msync does, whichever descriptor it is called on.
//
// Listing the directory on every sync cost about 30 µs of CPU per sync
// (14% of a one-writer append), so the syncer watches the directory with
// inotify and lists it again only when a memtable file was created, removed
// or renamed since the last listing (see dirWatch). Without inotify it
// lists on every sync.
type walSyncer struct {
	dir   string
	files map[string]*walFile // memtable files seen, by name
	mems  []string            // memtable names at the last listing, oldest first
	watch *dirWatch           // nil: list on every sync
	tried bool                // the watch was set up (or failed to be), at the first sync
	stale bool                // a change was seen that no listing has taken in yet
	lists int                 // listings done, for tests
}

// walFile is a memtable file the syncer has open.
type walFile struct {
	f *os.File
	// final: synced after a newer memtable file appeared, so nothing
	// written to it since is unsynced (Badger writes only to the newest).
	final bool
}

// newWALSyncer returns a syncer for dir. Its watch is set up at the first
// sync, by the goroutine that syncs: a queue that never syncs this way
// (fsync off, another sync mode, an open that fails) holds no inotify
// instance.
func newWALSyncer(dir string) *walSyncer {
	return &walSyncer{dir: dir, files: map[string]*walFile{}}
}

// sync fdatasyncs every memtable file written since its last sync. Files
// flushed and deleted meanwhile are skipped: their contents are in a table
// Badger synced before deleting them.
func (w *walSyncer) sync() error {
	if err := w.refresh(); err != nil {
		return err
	}
	for i, name := range w.mems {
		wf := w.files[name]
		if wf != nil && wf.final {
			continue // no write since its last sync
		}
		if wf == nil {
			f, err := os.Open(filepath.Join(w.dir, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("buffer: sync: open %s: %w", name, err)
			}
			wf = &walFile{f: f}
			w.files[name] = wf
		}
		if err := fdatasync(wf.f); err != nil {
			return fmt.Errorf("buffer: sync %s: %w", name, err)
		}
		wf.final = i < len(w.mems)-1
	}
	return nil
}

// refresh lists the memtable files again unless the watch says none
// appeared or went since the last listing. The watch is drained before the
// listing, so a file created during the listing is listed again next time
// rather than missed; a change drained by a listing that then failed stays
// pending (stale) until a listing succeeds.
func (w *walSyncer) refresh() error {
	if !w.tried {
		// Set up before the first listing, so no change after it is missed.
		w.tried, w.stale = true, true
		if d, err := newDirWatch(w.dir); err == nil {
			w.watch = d
		}
	}
	if w.watch == nil {
		w.stale = true
	} else if changed, err := w.watch.changed(); err != nil {
		// It can no longer tell: list on every sync from now on.
		w.watch.close()
		w.watch, w.stale = nil, true
	} else if changed {
		w.stale = true
	}
	if !w.stale {
		return nil
	}
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("buffer: sync: list %s: %w", w.dir, err)
	}
	w.lists++
	w.stale = false
	// Names are %05d.mem by increasing id, so the newest sorts last
	// (ReadDir sorts by name).
	w.mems = w.mems[:0]
	for _, e := range ents {
		if name := e.Name(); strings.HasSuffix(name, ".mem") {
			w.mems = append(w.mems, name)
		}
	}
	for name, wf := range w.files {
		if !slices.Contains(w.mems, name) {
			_ = wf.f.Close()
			delete(w.files, name)
		}
	}
	return nil
}

// close closes the files kept open and the watch.
func (w *walSyncer) close() {
	if w.watch != nil {
		w.watch.close()
		w.watch = nil
	}
	for name, wf := range w.files {
		_ = wf.f.Close()
		delete(w.files, name)
	}
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// dropEmptyMemtables removes memtable files of length zero from dir before
// Badger opens it, and returns their names. Such a file holds no record: it
// is what a power cut leaves of a memtable whose name reached the disk
// before its first sync (Badger creates it by extending a new file), and
// Badger refuses to open a directory holding one ("Create a new file"), a
// crash loop that would keep every acknowledged record of the queue from
// delivery.
func dropEmptyMemtables(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("buffer: list %s: %w", dir, err)
	}
	var dropped []string
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return dropped, fmt.Errorf("buffer: remove empty memtable %s: %w", e.Name(), err)
		}
		dropped = append(dropped, e.Name())
	}
	return dropped, nil
}
