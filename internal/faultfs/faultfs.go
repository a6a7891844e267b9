// Package faultfs is a test filesystem that forgets what was not synced: a
// FUSE loopback over a backing directory that passes every operation
// through, keeps beside it a durable copy of what an fsync covered, and on
// Cut simulates a power cut by putting the durable copy in place of the
// backing directory's contents.
//
// What it models (the "disk"):
//   - File data. Every write reaches the backing file at once (reads see it,
//     as they see the page cache), but it becomes durable only when an
//     fsync or fdatasync of that file covers it. msync(MS_SYNC) of a shared
//     mapping is an fsync here too: the kernel writes the dirty pages back
//     as FUSE WRITE requests and then sends FUSE FSYNC. Files are opened
//     without direct I/O and without FUSE passthrough, so both page
//     writeback and fsync reach this filesystem (TestMsync proves it).
//     Truncation and fallocate are durable on the next fsync, as data is.
//   - Names. A created, renamed or removed name becomes durable when its
//     directory is fsynced (the names in that directory are then recorded as
//     they are), or when the file itself is fsynced: its current name
//     becomes durable, its names that no longer exist are forgotten, and its
//     ancestor directories are kept. That is at least as strict as ext4's
//     default (data=ordered), where any fsync commits the whole journal and
//     with it every earlier name change. A file whose name is durable but
//     whose data never was comes back empty.
//   - Only regular files and directories are kept; symbolic links, device
//     nodes and extended attributes do not survive a cut.
//
// Freeze stops the disk: from then on every operation that would change
// the backing directory blocks, and, after Cut or Close, fails; an
// operation already running when Freeze is called completes first. Cut
// freezes, aborts the FUSE connection (a process blocked on the mount gets
// an error; nothing it had in flight reaches the backing directory),
// unmounts and puts the durable state in place. A test that also kills a
// process calls Freeze, then kills it, then calls Cut, so the process
// cannot make anything durable after the moment of the cut.
//
// A process must not memory-map files of a mount it serves: a page fault
// on a FUSE mapping waits for the server while holding the process's mmap
// lock, which the server's own allocations may need (a deadlock). Run such
// clients, like Badger, in another process.
//
// Mounting needs /dev/fuse and root (Cut aborts the connection with a
// forced unmount); Available reports whether both are there.
package faultfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Available reports why the filesystem cannot be mounted here (nil if it
// can): /dev/fuse, fusermount3 (go-fuse's fallback mounter) and root.
func Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("faultfs needs /dev/fuse: %w", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return fmt.Errorf("faultfs needs fusermount3 (Debian package fuse3): %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("faultfs needs root: Cut aborts the FUSE connection with a forced unmount")
	}
	return nil
}

// Stats counts the requests that reached the filesystem since Mount.
type Stats struct {
	Writes     int64 // WRITE requests (write(2) and writeback of mapped pages)
	WriteBytes int64 // bytes they carried
	Fsyncs     int64 // FSYNC requests on files (fsync, fdatasync, msync MS_SYNC)
	DirSyncs   int64 // FSYNCDIR requests
	SyncBytes  int64 // bytes copied into the durable state by file fsyncs
}

// FS is a mounted faultfs. Its methods are safe for concurrent use.
type FS struct {
	backing    string // absolute path of the backing directory
	mountpoint string
	shadow     string // durable file data: shadow/<id>, a sibling of backing
	server     *fuse.Server

	gate     sync.RWMutex // held shared by every mutating operation, exclusively by Freeze
	frozen   bool         // under gate
	released chan struct{}
	stopOnce sync.Once
	stopErr  error

	mu    sync.Mutex            // guards what follows
	next  uint64                // the last file id handed out
	ids   map[uint64]*fileState // backing inode number → the file it is now
	names map[string]uint64     // durable names (relative to backing) → file id
	dirs  map[string]bool       // durable directories, relative; "." is the root

	writes, writeBytes, fsyncs, dirSyncs, syncBytes atomic.Int64
}

// fileState is one file's durable data and what was written since.
type fileState struct {
	id uint64

	syncMu sync.Mutex // serialises fsyncs of the file, so each covers all earlier ones

	mu      sync.Mutex // guards dirty and truncLo
	dirty   []span     // sorted, disjoint, not adjacent
	truncLo int64      // smallest size set since the last fsync; -1 when none
}

type span struct{ off, end int64 }

// Mount mounts a faultfs of backing (an existing directory) on mountpoint
// (an existing empty directory). Everything in backing when it is mounted
// is taken as durable.
func Mount(backing, mountpoint string) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	shadow, err := os.MkdirTemp(filepath.Dir(backing), "."+filepath.Base(backing)+".durable-")
	if err != nil {
		return nil, fmt.Errorf("faultfs: durable copy dir: %w", err)
	}
	f := &FS{backing: backing, mountpoint: mountpoint, shadow: shadow, released: make(chan struct{}),
		ids: map[uint64]*fileState{}, names: map[string]uint64{}, dirs: map[string]bool{".": true}}
	if err := f.snapshot(); err != nil {
		os.RemoveAll(shadow)
		return nil, err
	}
	lb, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		os.RemoveAll(shadow)
		return nil, fmt.Errorf("faultfs: %w", err)
	}
	ln := lb.(*gofs.LoopbackNode)
	root := &node{LoopbackNode: ln, fs: f}
	ln.RootData.RootNode = root
	zero := time.Duration(0)
	f.server, err = gofs.Mount(mountpoint, root, &gofs.Options{
		// No kernel caching of names or attributes: a cut must not leave
		// the kernel believing in what the backing directory lost.
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName:        "faultfs",
			Name:          "faultfs",
			DirectMount:   true,
			DisableXAttrs: true,
		},
	})
	if err != nil {
		os.RemoveAll(shadow)
		return nil, fmt.Errorf("faultfs: mount %s on %s: %w", backing, mountpoint, err)
	}
	return f, nil
}

// snapshot takes what backing holds as the durable state.
func (f *FS) snapshot() error {
	return filepath.WalkDir(f.backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(f.backing, p)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			f.dirs[rel] = true
		case d.Type().IsRegular():
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			s := f.newFile(st.Ino)
			if err := copySparse(p, f.dataPath(s.id)); err != nil {
				return fmt.Errorf("faultfs: durable copy of %s: %w", rel, err)
			}
			f.names[rel] = s.id
		}
		return nil
	})
}

// newFile records a new file behind backing inode ino. Callers hold f.mu
// or own f.
func (f *FS) newFile(ino uint64) *fileState {
	f.next++
	s := &fileState{id: f.next, truncLo: -1}
	f.ids[ino] = s
	return s
}

// fileOf returns the file behind backing inode ino, recording one if the
// inode is new to the filesystem.
func (f *FS) fileOf(ino uint64) *fileState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.ids[ino]; ok {
		return s
	}
	return f.newFile(ino)
}

func (f *FS) dataPath(id uint64) string { return filepath.Join(f.shadow, strconv.FormatUint(id, 10)) }

// Mountpoint is where the filesystem is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Stats returns the request counts so far.
func (f *FS) Stats() Stats {
	return Stats{Writes: f.writes.Load(), WriteBytes: f.writeBytes.Load(), Fsyncs: f.fsyncs.Load(),
		DirSyncs: f.dirSyncs.Load(), SyncBytes: f.syncBytes.Load()}
}

// enter admits a mutating operation; it reports false, after Cut or Close,
// when the disk is frozen. A true answer must be paired with leave.
func (f *FS) enter() bool {
	f.gate.RLock()
	if f.frozen {
		f.gate.RUnlock()
		<-f.released
		return false
	}
	return true
}

func (f *FS) leave() { f.gate.RUnlock() }

// Freeze stops the disk at this moment: operations already running finish,
// later ones that would change anything block until Cut or Close, then
// fail with EIO.
func (f *FS) Freeze() {
	f.gate.Lock()
	f.frozen = true
	f.gate.Unlock()
}

// Cut simulates a power cut: it freezes the disk (if Freeze was not called
// already), aborts the FUSE connection, unmounts, and replaces the backing
// directory's contents with the durable state. The FS cannot be used
// afterwards; Mount the backing directory again to go on.
func (f *FS) Cut() error {
	if err := f.stop(); err != nil {
		return err
	}
	return f.restore()
}

// Close unmounts without a cut (the backing directory keeps everything
// written) and removes the durable copy. It is safe to call after Cut and
// more than once.
func (f *FS) Close() error {
	err := f.stop()
	if rerr := os.RemoveAll(f.shadow); err == nil && rerr != nil {
		err = fmt.Errorf("faultfs: %w", rerr)
	}
	return err
}

// stop freezes, aborts the connection and unmounts, once.
func (f *FS) stop() error {
	f.stopOnce.Do(func() {
		f.Freeze()
		// MNT_FORCE makes the kernel abort the FUSE connection
		// (fuse_umount_begin) even when the mount is busy: every request
		// pending or in userspace ends with an error, so a process blocked
		// on the mount can die. The unmount itself may then fail with
		// EBUSY while such a process holds files; MNT_DETACH finishes it.
		ferr := unix.Unmount(f.mountpoint, unix.MNT_FORCE)
		close(f.released)
		if ferr != nil {
			if err := unix.Unmount(f.mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				f.stopErr = fmt.Errorf("faultfs: unmount %s: %w (forced: %v)", f.mountpoint, err, ferr)
			}
		}
		f.server.Wait()
	})
	return f.stopErr
}

// restore replaces the backing directory's contents with the durable
// state and removes the durable copy.
func (f *FS) restore() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	entries, err := os.ReadDir(f.backing)
	if err != nil {
		return fmt.Errorf("faultfs: restore: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(f.backing, e.Name())); err != nil {
			return fmt.Errorf("faultfs: restore: %w", err)
		}
	}
	dirs := make([]string, 0, len(f.dirs))
	for d := range f.dirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs) // parents first
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(f.backing, d), 0o755); err != nil {
			return fmt.Errorf("faultfs: restore: %w", err)
		}
	}
	for name, id := range f.names {
		dst := filepath.Join(f.backing, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("faultfs: restore: %w", err)
		}
		src := f.dataPath(id)
		if err := os.Link(src, dst); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("faultfs: restore %s: %w", name, err)
			}
			// Named durably, never synced: it comes back empty.
			if err := os.WriteFile(dst, nil, 0o644); err != nil {
				return fmt.Errorf("faultfs: restore %s: %w", name, err)
			}
		}
	}
	if err := os.RemoveAll(f.shadow); err != nil {
		return fmt.Errorf("faultfs: restore: %w", err)
	}
	return nil
}

// wrote records that [off, off+n) of s was written.
func (s *fileState) wrote(off, n int64) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty = addSpan(s.dirty, span{off, off + n})
}

// truncated records that s's size was set to size.
func (s *fileState) truncated(size int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.truncLo < 0 || size < s.truncLo {
		s.truncLo = size
	}
}

// addSpan inserts sp into the sorted, disjoint list l, merging what
// overlaps or touches it.
func addSpan(l []span, sp span) []span {
	i := sort.Search(len(l), func(i int) bool { return l[i].end >= sp.off })
	j := i
	for j < len(l) && l[j].off <= sp.end {
		sp.off = min(sp.off, l[j].off)
		sp.end = max(sp.end, l[j].end)
		j++
	}
	if i == j {
		l = append(l, span{})
		copy(l[i+1:], l[i:])
		l[i] = sp
		return l
	}
	l[i] = sp
	return append(l[:i+1], l[j:]...)
}

// syncData makes what wfd (an open descriptor of s's backing file, maybe
// write-only) holds durable: the size, and every range written since the
// last fsync.
func (f *FS) syncData(s *fileState, wfd int) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	dirty, truncLo := s.dirty, s.truncLo
	s.dirty, s.truncLo = nil, -1
	s.mu.Unlock()

	// Read through a new descriptor of the same inode (even if unlinked).
	in, err := os.Open("/proc/self/fd/" + strconv.Itoa(wfd))
	if err != nil {
		return err
	}
	defer in.Close()
	fd := int(in.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	out, err := os.OpenFile(f.dataPath(s.id), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if truncLo >= 0 {
		if err := out.Truncate(min(truncLo, st.Size)); err != nil {
			return err
		}
	}
	if err := out.Truncate(st.Size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, sp := range dirty {
		for off := sp.off; off < min(sp.end, st.Size); {
			n := min(int64(len(buf)), min(sp.end, st.Size)-off)
			got, err := unix.Pread(fd, buf[:n], off)
			if err != nil {
				return err
			}
			if got == 0 {
				break
			}
			if _, err := out.WriteAt(buf[:got], off); err != nil {
				return err
			}
			f.syncBytes.Add(int64(got))
			off += int64(got)
		}
	}
	return nil
}

// syncName makes rel, the current name of s, durable, forgets the names of
// s that no longer exist, and keeps rel's ancestors.
func (f *FS) syncName(s *fileState, ino uint64, rel string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, id := range f.names {
		if id == s.id && name != rel && !f.liveIs(name, ino) {
			delete(f.names, name)
		}
	}
	if rel == "" || rel == "." {
		return // unlinked: only its old names were settled
	}
	f.names[rel] = s.id
	for d := filepath.Dir(rel); ; d = filepath.Dir(d) {
		f.dirs[d] = true
		if d == "." {
			break
		}
	}
}

// liveIs reports whether rel names backing inode ino now.
func (f *FS) liveIs(rel string, ino uint64) bool {
	var st unix.Stat_t
	return unix.Lstat(filepath.Join(f.backing, rel), &st) == nil && st.Ino == ino
}

// syncDir makes the names in directory rel durable as they are now.
func (f *FS) syncDir(rel string) error {
	entries, err := os.ReadDir(filepath.Join(f.backing, rel))
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	child := func(name string) string { return filepath.Join(rel, name) }
	live := make(map[string]bool, len(entries))
	for _, e := range entries {
		live[child(e.Name())] = e.IsDir()
	}
	for name := range f.names {
		if filepath.Dir(name) == rel {
			delete(f.names, name)
		}
	}
	for d := range f.dirs {
		if d != "." && d != rel && filepath.Dir(d) == rel {
			if isDir, ok := live[d]; !ok || !isDir {
				f.forgetTree(d)
			}
		}
	}
	for _, e := range entries {
		c := child(e.Name())
		switch {
		case e.IsDir():
			f.dirs[c] = true
		case e.Type().IsRegular():
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(f.backing, c), &st); err != nil {
				continue // gone since ReadDir
			}
			s, ok := f.ids[st.Ino]
			if !ok {
				s = f.newFile(st.Ino)
			}
			f.names[c] = s.id
		}
	}
	f.dirs[rel] = true
	return nil
}

// forgetTree drops directory d and everything durable under it. Callers
// hold f.mu.
func (f *FS) forgetTree(d string) {
	prefix := d + string(filepath.Separator)
	delete(f.dirs, d)
	for x := range f.dirs {
		if strings.HasPrefix(x, prefix) {
			delete(f.dirs, x)
		}
	}
	for name := range f.names {
		if strings.HasPrefix(name, prefix) {
			delete(f.names, name)
		}
	}
}

// copySparse copies regular file src to a new file dst, data regions only
// (Badger's files are large and mostly holes).
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	fd := int(in.Fd())
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				break // only a hole is left
			}
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return out.Close()
}

// node is a loopback node whose mutating operations pass the freeze gate
// and keep the durable state.
type node struct {
	*gofs.LoopbackNode
	fs *FS
}

var (
	_ gofs.NodeWrapChilder    = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
)

// WrapChild makes every node of the tree a faultfs node.
func (n *node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	if ln, ok := ops.(*gofs.LoopbackNode); ok {
		return &node{LoopbackNode: ln, fs: n.fs}
	}
	return ops
}

// rel is the node's path relative to the backing directory ("." for the
// root; "" when it has no parent any more).
func (n *node) rel() string {
	if n.IsRoot() {
		return "."
	}
	p := n.Path(n.Root())
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if !n.fs.enter() {
		return nil, nil, 0, syscall.EIO
	}
	defer n.fs.leave()
	ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return ch, fh, fl, errno
	}
	lf := fh.(*gofs.LoopbackFile)
	var st unix.Stat_t
	if err := fstatHandle(lf, &st); err != nil {
		lf.Release(ctx)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	n.fs.mu.Lock()
	s := n.fs.newFile(st.Ino) // a new file, even where an old inode number is reused
	n.fs.mu.Unlock()
	return ch, &handle{lf: lf, node: ch, state: s, ino: st.Ino, fs: n.fs}, fl, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	lf := fh.(*gofs.LoopbackFile)
	var st unix.Stat_t
	if err := fstatHandle(lf, &st); err != nil {
		lf.Release(ctx)
		return nil, 0, gofs.ToErrno(err)
	}
	return &handle{lf: lf, node: n.EmbeddedInode(), state: n.fs.fileOf(st.Ino), ino: st.Ino, fs: n.fs}, fl, 0
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno == 0 && mode&syscall.S_IFMT == syscall.S_IFREG {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(n.fs.backing, n.rel(), name), &st) == nil {
			n.fs.mu.Lock()
			n.fs.newFile(st.Ino) // a new file, even where an old inode number is reused
			n.fs.mu.Unlock()
		}
	}
	return ch, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Rmdir(ctx, name)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Unlink(ctx, name)
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.fs.enter() {
		return nil, syscall.EIO
	}
	defer n.fs.leave()
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

// Tmpfile is refused: an O_TMPFILE file has no name to keep.
func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// CopyFileRange is refused, so the kernel falls back to reads and writes,
// which are tracked.
func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EOPNOTSUPP
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.fs.enter() {
		return syscall.EIO
	}
	defer n.fs.leave()
	var inner gofs.FileHandle
	h, _ := fh.(*handle)
	if h != nil {
		inner = h.lf
	}
	if errno := n.LoopbackNode.Setattr(ctx, inner, in, out); errno != 0 {
		return errno
	}
	if size, ok := in.GetSize(); ok {
		s := n.stateOf(h)
		if s != nil {
			s.truncated(int64(size))
		}
	}
	return 0
}

// stateOf returns the file behind h, or behind the node's backing path
// when h is nil.
func (n *node) stateOf(h *handle) *fileState {
	if h != nil {
		return h.state
	}
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(n.fs.backing, n.rel()), &st) != nil {
		return nil
	}
	return n.fs.fileOf(st.Ino)
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return h.lf.Getattr(ctx, out)
	}
	return n.LoopbackNode.Getattr(ctx, nil, out)
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	return &dirHandle{loopDir: fh.(loopDir), node: n}, fl, 0
}

// loopDir is what go-fuse's loopback directory stream implements.
type loopDir interface {
	gofs.FileReaddirenter
	gofs.FileSeekdirer
	gofs.FileReleasedirer
	gofs.FileFsyncdirer
}

// dirHandle is an open directory whose fsync makes its names durable.
type dirHandle struct {
	loopDir
	node *node
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	f := d.node.fs
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	f.dirSyncs.Add(1)
	if errno := d.loopDir.Fsyncdir(ctx, flags); errno != 0 {
		return errno
	}
	rel := d.node.rel()
	if rel == "" {
		return 0
	}
	return gofs.ToErrno(f.syncDir(rel))
}

// handle is an open file. It deliberately does not offer go-fuse's
// passthrough (PassthroughFd): with passthrough the kernel would write to
// the backing file directly and the filesystem would not see the writes.
type handle struct {
	lf    *gofs.LoopbackFile
	node  *gofs.Inode
	state *fileState
	ino   uint64
	fs    *FS
}

var (
	_ gofs.FileReader    = (*handle)(nil)
	_ gofs.FileWriter    = (*handle)(nil)
	_ gofs.FileFsyncer   = (*handle)(nil)
	_ gofs.FileFlusher   = (*handle)(nil)
	_ gofs.FileReleaser  = (*handle)(nil)
	_ gofs.FileGetattrer = (*handle)(nil)
	_ gofs.FileLseeker   = (*handle)(nil)
	_ gofs.FileAllocater = (*handle)(nil)
)

func fstatHandle(lf *gofs.LoopbackFile, st *unix.Stat_t) error {
	fd, ok := lf.PassthroughFd()
	if !ok {
		return errors.New("faultfs: loopback file without a descriptor")
	}
	return unix.Fstat(fd, st)
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, buf, off)
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.fs.enter() {
		return 0, syscall.EIO
	}
	defer h.fs.leave()
	n, errno := h.lf.Write(ctx, data, off)
	h.fs.writes.Add(1)
	h.fs.writeBytes.Add(int64(n))
	h.state.wrote(off, int64(n))
	return n, errno
}

func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if !h.fs.enter() {
		return syscall.EIO
	}
	defer h.fs.leave()
	errno := h.lf.Allocate(ctx, off, size, mode)
	if errno == 0 {
		h.state.wrote(int64(off), int64(size))
	}
	return errno
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if !h.fs.enter() {
		return syscall.EIO
	}
	defer h.fs.leave()
	h.fs.fsyncs.Add(1)
	if errno := h.lf.Fsync(ctx, flags); errno != 0 {
		return errno
	}
	fd, ok := h.lf.PassthroughFd()
	if !ok {
		return syscall.EIO
	}
	if err := h.fs.syncData(h.state, fd); err != nil {
		return gofs.ToErrno(err)
	}
	rel := ""
	if !h.node.IsRoot() {
		if p := h.node.Path(h.node.Root()); p != "" {
			rel = filepath.Clean(p)
		}
	}
	if rel != "" && !h.fs.liveIs(rel, h.ino) {
		rel = "" // unlinked while open
	}
	h.fs.syncName(h.state, h.ino, rel)
	return 0
}

func (h *handle) Flush(ctx context.Context) syscall.Errno   { return h.lf.Flush(ctx) }
func (h *handle) Release(ctx context.Context) syscall.Errno { return h.lf.Release(ctx) }
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}
