package faultfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mounted mounts a faultfs of a fresh backing dir for the test and
// unmounts it in t.Cleanup whatever happens. It skips, saying why, where
// FUSE cannot be mounted.
func mounted(t *testing.T) (f *FS, backing string) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	dir := t.TempDir()
	backing = filepath.Join(dir, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	return remount(t, backing), backing
}

// remount mounts backing again (after a Cut) on a new mountpoint.
func remount(t *testing.T, backing string) *FS {
	t.Helper()
	mnt, err := os.MkdirTemp(filepath.Dir(backing), "mnt-")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
}

func write(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func cut(t *testing.T, f *FS) {
	t.Helper()
	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
}

// contents reads a file of the backing dir; nil if it does not exist.
func contents(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnsyncedWritesAreLost(t *testing.T) {
	f, backing := mounted(t)
	m := f.Mountpoint()
	write(t, filepath.Join(m, "synced"), []byte("kept;"), true)
	write(t, filepath.Join(m, "synced"), []byte("lost"), false)
	write(t, filepath.Join(m, "never-synced"), []byte("lost"), false)
	if got := contents(t, filepath.Join(backing, "synced")); string(got) != "kept;lost" {
		t.Fatalf("before the cut the backing file holds %q, want every write", got)
	}
	cut(t, f)
	if got := contents(t, filepath.Join(backing, "synced")); string(got) != "kept;" {
		t.Errorf("after the cut: %q, want only the synced prefix %q", got, "kept;")
	}
	if _, err := os.Stat(filepath.Join(backing, "never-synced")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file never synced (nor its directory) survived the cut: %v", err)
	}
	// A new mount shows what survived and works on.
	f2 := remount(t, backing)
	if got := contents(t, filepath.Join(f2.Mountpoint(), "synced")); string(got) != "kept;" {
		t.Errorf("through a new mount: %q", got)
	}
	write(t, filepath.Join(f2.Mountpoint(), "synced"), []byte("again"), true)
	cut(t, f2)
	if got := contents(t, filepath.Join(backing, "synced")); string(got) != "kept;again" {
		t.Errorf("after a second cut: %q", got)
	}
}

func TestSyncedDataSurvives(t *testing.T) {
	f, backing := mounted(t)
	m := f.Mountpoint()
	if err := os.MkdirAll(filepath.Join(m, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, several WRITE requests
	write(t, filepath.Join(m, "a", "b", "big"), big, true)
	// A directory sync makes a name durable without its data.
	write(t, filepath.Join(m, "dir-synced-only"), []byte("data never synced"), false)
	syncDir(t, m)
	cut(t, f)
	if got := contents(t, filepath.Join(backing, "a", "b", "big")); !bytes.Equal(got, big) {
		t.Errorf("synced file: %d bytes back, want %d", len(got), len(big))
	}
	if got, err := os.ReadFile(filepath.Join(backing, "dir-synced-only")); err != nil || len(got) != 0 {
		t.Errorf("file whose name only was synced: %q, %v; want an empty file", got, err)
	}
}

func TestTruncateAndOverwrite(t *testing.T) {
	f, backing := mounted(t)
	p := filepath.Join(f.Mountpoint(), "f")
	write(t, p, []byte("aaaaaaaaaa"), true)
	fh, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	// Shrink, write, grow back: the durable copy must show the zeroes of
	// the truncation, not the old bytes.
	if err := fh.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("b"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(6); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("ccc"), 0); err != nil { // not synced
		t.Fatal(err)
	}
	cut(t, f)
	if got := contents(t, filepath.Join(backing, "f")); string(got) != "ba\x00\x00\x00\x00" {
		t.Errorf("after the cut: %q, want %q", got, "ba\x00\x00\x00\x00")
	}
}

// TestRenameAndUnlink pins the name model: a rename or unlink is durable
// once the directory (or the file, for a rename) is synced.
func TestRenameAndUnlink(t *testing.T) {
	f, backing := mounted(t)
	m := f.Mountpoint()
	for _, n := range []string{"dir-synced", "file-synced", "not-synced"} {
		write(t, filepath.Join(m, n+".tmp"), []byte(n), true)
	}
	write(t, filepath.Join(m, "removed"), []byte("x"), true)
	write(t, filepath.Join(m, "removed-not-synced"), []byte("y"), true)
	syncDir(t, m)
	for _, n := range []string{"dir-synced", "file-synced", "not-synced"} {
		if err := os.Rename(filepath.Join(m, n+".tmp"), filepath.Join(m, n)); err != nil {
			t.Fatal(err)
		}
	}
	fh, err := os.OpenFile(filepath.Join(m, "file-synced"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if err := os.Remove(filepath.Join(m, "removed")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, m) // covers the rename of dir-synced and the removal
	if err := os.Rename(filepath.Join(m, "not-synced.tmp"), filepath.Join(m, "elsewhere")); err == nil {
		t.Fatal("not-synced.tmp should be gone already")
	}
	if err := os.Remove(filepath.Join(m, "removed-not-synced")); err != nil {
		t.Fatal(err)
	}
	// A rename after the last directory sync.
	if err := os.Rename(filepath.Join(m, "not-synced"), filepath.Join(m, "not-synced.2")); err != nil {
		t.Fatal(err)
	}
	cut(t, f)
	want := map[string]string{
		"dir-synced": "dir-synced", "file-synced": "file-synced", "not-synced": "not-synced",
		"removed-not-synced": "y",
	}
	entries, err := os.ReadDir(backing)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Name()] = string(contents(t, filepath.Join(backing, e.Name())))
	}
	if len(got) != len(want) {
		t.Errorf("after the cut the dir holds %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

// TestMain runs the test binary as the mmap helper when asked (see
// mmapWrite).
func TestMain(m *testing.M) {
	if p := os.Getenv("FAULTFS_MMAP_PATH"); p != "" {
		if err := mmapHelper(p, []byte(os.Getenv("FAULTFS_MMAP_DATA")), os.Getenv("FAULTFS_MMAP_SYNC") == "1"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// mmapWrite maps path (a file of the mount, created beforehand) shared,
// writes data at offset 0 through the mapping, then msyncs it or not, and
// unmaps and closes it. It does so in a child process: a page fault on a
// FUSE mapping waits for the server while holding the faulting process's
// mmap lock, which the server's own allocations may need, so a process
// must not map files of a mount it serves.
func mmapWrite(t *testing.T, path string, data []byte, msync bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	sync := "0"
	if msync {
		sync = "1"
	}
	cmd.Env = append(os.Environ(), "FAULTFS_MMAP_PATH="+path, "FAULTFS_MMAP_DATA="+string(data), "FAULTFS_MMAP_SYNC="+sync)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap helper: %v\n%s", err, out)
	}
}

func mmapHelper(path string, data []byte, msync bool) error {
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(fh.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap on the FUSE mount: %w", err)
	}
	copy(mem, data)
	if msync {
		if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
			return fmt.Errorf("msync: %w", err)
		}
	}
	if err := unix.Munmap(mem); err != nil {
		return err
	}
	return fh.Close()
}

// TestMsync proves that msync(MS_SYNC) of a shared mapping reaches the
// filesystem (the dirty pages as WRITE requests, then FSYNC) and makes the
// data durable, as Badger's memtable WAL and value log rely on.
func TestMsync(t *testing.T) {
	f, backing := mounted(t)
	p := filepath.Join(f.Mountpoint(), "wal.mem")
	fh, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(64 << 10); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	before := f.Stats()
	data := bytes.Repeat([]byte("msync"), 2000) // 10 kB: three pages
	mmapWrite(t, p, data, true)
	after := f.Stats()
	if after.Writes == before.Writes || after.WriteBytes-before.WriteBytes < int64(len(data)) {
		t.Errorf("msync sent %d WRITE requests (%d bytes) for %d mapped bytes: the dirty pages did not reach the filesystem",
			after.Writes-before.Writes, after.WriteBytes-before.WriteBytes, len(data))
	}
	if after.Fsyncs == before.Fsyncs {
		t.Error("msync(MS_SYNC) sent no FSYNC request")
	}
	cut(t, f)
	got := contents(t, filepath.Join(backing, "wal.mem"))
	if len(got) != 64<<10 || !bytes.Equal(got[:len(data)], data) {
		t.Errorf("after the cut: %d bytes, mapped data kept: %v", len(got), len(got) >= len(data) && bytes.Equal(got[:len(data)], data))
	}
}

// TestMmapWithoutMsync: pages written through a mapping and written back
// (munmap and close flush them) but never msynced are lost.
func TestMmapWithoutMsync(t *testing.T) {
	f, backing := mounted(t)
	p := filepath.Join(f.Mountpoint(), "wal.mem")
	write(t, p, make([]byte, 16<<10), true)
	before := f.Stats()
	data := bytes.Repeat([]byte("lost"), 1000)
	mmapWrite(t, p, data, false)
	if got := contents(t, filepath.Join(backing, "wal.mem")); !bytes.Equal(got[:len(data)], data) {
		t.Fatal("closing the mapped file did not write its pages back to the backing file")
	}
	if f.Stats().Writes == before.Writes {
		t.Error("the written-back pages did not pass through the filesystem")
	}
	cut(t, f)
	got := contents(t, filepath.Join(backing, "wal.mem"))
	if !bytes.Equal(got, make([]byte, 16<<10)) {
		t.Errorf("after the cut the mapped but unsynced data is still there (%q…)", got[:16])
	}
}

// TestFreeze: an operation after Freeze does not reach the backing dir,
// and the process that made it gets an error once the power is cut.
func TestFreeze(t *testing.T) {
	f, backing := mounted(t)
	p := filepath.Join(f.Mountpoint(), "f")
	write(t, p, []byte("before;"), true)
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	f.Freeze()
	done := make(chan error, 1)
	go func() {
		_, err := fh.Write([]byte("after"))
		if err == nil {
			err = fh.Sync()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write after Freeze returned (%v) before the cut", err)
	case <-time.After(200 * time.Millisecond):
		// Still blocked, as a write to a disk without power. (Only an
		// upper bound on how long to watch; nothing waits on it.)
	}
	if got := contents(t, filepath.Join(backing, "f")); string(got) != "before;" {
		t.Errorf("a write after Freeze reached the backing file: %q", got)
	}
	cut(t, f)
	select {
	case err := <-done:
		if err == nil {
			t.Error("a write after the cut succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write blocked by Freeze did not end after the cut")
	}
	if got := contents(t, filepath.Join(backing, "f")); string(got) != "before;" {
		t.Errorf("after the cut: %q", got)
	}
}

func TestAddSpan(t *testing.T) {
	var l []span
	for _, sp := range []span{{10, 20}, {30, 40}, {0, 5}, {20, 25}, {50, 60}, {24, 31}, {5, 6}} {
		l = addSpan(l, sp)
	}
	want := []span{{0, 6}, {10, 40}, {50, 60}}
	if len(l) != len(want) {
		t.Fatalf("got %v, want %v", l, want)
	}
	for i := range want {
		if l[i] != want[i] {
			t.Fatalf("got %v, want %v", l, want)
		}
	}
}
