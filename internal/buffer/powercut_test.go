package buffer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/flowedge/flowedge/internal/faultfs"
)

// TestPowerCutRotatedMemtable pins the gap the queue's sync must close
// (the bug: DB.Sync syncs only the active memtable's write-ahead log, so a
// record committed into a memtable that Badger rotates before the queue's
// sync was acknowledged but only in the page cache until that memtable's
// flush, and a power cut lost it).
//
// A child process runs the queue on a faultfs mount (a filesystem that
// forgets what no fsync covered) with a small memtable and the flusher held
// up (compactions off, level 0 full), so a rotated memtable stays a file.
// One record is appended; between its commit and its sync the child writes
// filler entries straight into Badger until the memtable holding the record
// rotates. When Append returns, the parent freezes the disk, kills the child
// and cuts the power, then opens what survived: the record must be there.
// The same run with DB.Sync alone (the old sync) must lose it, or the test
// would not be testing the gap. A third run rotates the memtable after one
// sync and before the record's commit: the record then sits in a memtable
// file the syncer has not seen yet. Skipped where /dev/fuse (or root) is
// missing.
func TestPowerCutRotatedMemtable(t *testing.T) {
	if dir := os.Getenv(pcChildDir); dir != "" {
		powerCutChild(t, dir, os.Getenv(pcChildMode))
		return
	}
	if err := faultfs.Available(); err != nil {
		t.Skipf("power-cut test skipped: %v", err)
	}
	for _, m := range []struct {
		mode     string
		wantKept bool
	}{{"wal", true}, {"dbsync", false}, {"wal-rotated-first", true}} {
		t.Run(m.mode, func(t *testing.T) {
			kept, id := powerCut(t, m.mode)
			switch {
			case m.wantKept && !kept:
				t.Fatalf("record %s acknowledged before the cut is lost", id)
			case !m.wantKept && kept:
				t.Fatalf("record %s survived with DB.Sync alone: the test no longer reproduces the rotated-memtable gap", id)
			}
			t.Logf("sync %s: acknowledged record kept after the cut: %v", m.mode, kept)
		})
	}
}

const (
	pcChildDir  = "FLOWEDGE_POWERCUT_CHILD_DIR"
	pcChildMode = "FLOWEDGE_POWERCUT_CHILD_SYNC"
)

// powerCut runs one child on a fresh mount, cuts the power once its record
// is acknowledged, and reports whether the record survived.
func powerCut(t *testing.T, mode string) (kept bool, id string) {
	root := t.TempDir()
	backing, mnt := filepath.Join(root, "backing"), filepath.Join(root, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := faultfs.Mount(backing, mnt)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { _ = fs.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPowerCutRotatedMemtable$", "-test.v")
	cmd.Env = append(os.Environ(), pcChildDir+"="+filepath.Join(mnt, "q"), pcChildMode+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			// A dying process writes its mapped pages back through the
			// mount: close the mount before waiting for it.
			_ = cmd.Process.Kill()
			_ = fs.Close()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "ACKED "); ok {
			id = rest
			break
		}
		if rest, ok := strings.CutPrefix(sc.Text(), "CHILD FAILED "); ok {
			t.Fatalf("child: %s", rest)
		}
		t.Logf("child: %s", sc.Text())
	}
	if id == "" {
		t.Fatalf("child ended without acknowledging its record: %v", sc.Err())
	}
	// The cut: nothing the child does from here reaches the disk.
	// Wait only after the cut: the killed process writes its mapped pages
	// back on exit, which the frozen disk would hold forever.
	fs.Freeze()
	_ = cmd.Process.Kill()
	killed = true
	cutErr := fs.Cut()
	_ = cmd.Wait()
	if cutErr != nil {
		t.Fatalf("cut: %v", cutErr)
	}

	q, err := Open(Options{Path: filepath.Join(backing, "q"), Partitions: 1, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("open after the cut: %v", err)
	}
	defer q.Close()
	d, err := q.Lookup(id)
	switch {
	case err == nil && d.Status == StatusQueued:
		return true, id
	case errors.Is(err, ErrNotFound):
		return false, id
	default:
		t.Fatalf("lookup after the cut: %+v, %v", d, err)
		return false, id
	}
}

// memFiles lists the memtable files of dir.
func memFiles(dir string) map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mem") {
			out[e.Name()] = true
		}
	}
	return out
}

func countSuffix(dir, suffix string) int {
	n := 0
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) {
			n++
		}
	}
	return n
}

// fillUntilRotation writes filler entries straight into Badger until a new
// memtable file appears in dir (the active memtable rotated).
func fillUntilRotation(db *badger.DB, dir string) error {
	before := memFiles(dir)
	return fillUntil(db, "rotation", func() bool {
		for name := range memFiles(dir) {
			if !before[name] {
				return true
			}
		}
		return false
	})
}

// fillUntil writes filler entries straight into Badger until cond holds.
func fillUntil(db *badger.DB, what string, cond func() bool) error {
	filler := make([]byte, 32<<10)
	deadline := time.Now().Add(time.Minute)
	for i := 0; !cond(); i++ {
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %d fillers", what, i)
		}
		err := db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(fmt.Sprintf("zfiller-%d-%d", time.Now().UnixNano(), i)), filler)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// powerCutChild is the child side: it prints "ACKED <id>" once Append
// returned, then waits to be killed.
func powerCutChild(t *testing.T, dir, mode string) {
	fail := func(err error) {
		fmt.Printf("CHILD FAILED %v\n", err)
		os.Exit(1)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail(err)
	}
	tu := defaultTuning()
	tu.memTableSize = 1 << 20
	tu.numMemtables = 8 // room in the flush queue for the rotations while the flusher is stopped
	tu.valueThreshold = 64 << 10
	tu.compactors = 0 // with level 0 full, the flusher stops: rotated memtables stay files
	tu.l0Tables, tu.l0Stall = 1, 2
	tu.compression = options.None
	switch mode {
	case "wal", "wal-rotated-first":
		tu.sync = syncWAL
	case "dbsync":
		tu.sync = syncDB
	default:
		fail(fmt.Errorf("unknown sync mode %q", mode))
	}
	var armed atomic.Bool
	var hookErr atomic.Value
	tu.beforeSync = func(q *queue) error {
		if !armed.CompareAndSwap(true, false) {
			return nil
		}
		// Between the record's commit and its sync: rotate its memtable.
		err := fillUntilRotation(q.db, dir)
		if err != nil {
			hookErr.Store(err)
		}
		return nil
	}
	qq, err := openTuned(Options{Path: dir, Partitions: 1, Logger: discardLogger()}, tu)
	if err != nil {
		fail(err)
	}
	q := qq.(*queue)
	fmt.Println("opened")
	// Level 0 full (tables up to the stall), then one more flush that
	// blocks: from here on no memtable is flushed.
	// Each rotation's flush is awaited before the next, so that the flush
	// queue does not fill (writes would block).
	for tables := 1; tables <= tu.l0Stall+1; tables++ {
		err := fillUntilRotation(q.db, dir)
		if err != nil {
			fail(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for countSuffix(dir, ".sst") < tables {
			if time.Now().After(deadline) {
				fail(fmt.Errorf("flush %d did not write its table", tables))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fmt.Println("flusher stopped")
	if mode == "wal-rotated-first" {
		// The memtable rotates after one sync and before the record's
		// commit, so the record is in a memtable file the syncer has not
		// listed: it must notice the new file (its directory watch) rather
		// than sync only the files it knew.
		if _, err := q.Append(context.Background(), []*Record{newRecord(0, "warm-up", 100)}); err != nil {
			fail(err)
		}
		if err := fillUntilRotation(q.db, dir); err != nil {
			fail(err)
		}
	} else {
		armed.Store(true)
	}
	r := newRecord(0, "powercut", 100)
	if _, err := q.Append(context.Background(), []*Record{r}); err != nil {
		fail(err)
	}
	if err, _ := hookErr.Load().(error); err != nil {
		fail(err)
	}
	fmt.Printf("ACKED %s\n", r.ID)
	select {} // killed by the parent
}
