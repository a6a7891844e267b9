package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// dirWatch tells the WAL syncer whether a memtable file may have appeared
// in or gone from the queue's directory since it last asked, so the syncer
// lists the directory only then.
//
// It reads inotify directly rather than through a watcher library such as
// fsnotify: those hand events over from a goroutine of their own, so an
// event the kernel has queued may not have reached their channel yet when
// the syncer asks, and a rotated memtable would go unsynced. The kernel
// queues an inotify event within the system call that creates the file,
// before Badger can write to it, so a non-blocking read of the inotify
// descriptor made after a commit sees the creation of every memtable file
// that commit could have written to.
type dirWatch struct {
	fd  int
	buf []byte
}

// watchMask: entries created, removed or renamed, and the watch itself
// ending (the directory removed or moved, the watch dropped).
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// blindMask: events after which the watch cannot vouch for the directory.
const blindMask = unix.IN_Q_OVERFLOW | unix.IN_IGNORED | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_UNMOUNT

func newDirWatch(dir string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("buffer: inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, watchMask); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("buffer: inotify watch %s: %w", dir, err)
	}
	return &dirWatch{fd: fd, buf: make([]byte, 8<<10)}, nil
}

// errBlind: the watch lost track (its queue overflowed or the directory
// went); the caller must list the directory from now on.
var errBlind = errors.New("buffer: directory watch lost track")

// changed drains the pending events and reports whether any concerned a
// memtable file.
func (d *dirWatch) changed() (bool, error) {
	changed := false
	for {
		n, err := unix.Read(d.fd, d.buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return changed, nil
		case err != nil:
			return true, fmt.Errorf("buffer: read inotify: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			// struct inotify_event { int wd; uint32 mask, cookie, len; char name[len]; }
			mask := binary.NativeEndian.Uint32(d.buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(d.buf[off+12:]))
			name := d.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if mask&blindMask != 0 {
				return true, errBlind
			}
			if bytes.HasSuffix(name, []byte(".mem")) {
				changed = true
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
	}
}

func (d *dirWatch) close() { _ = unix.Close(d.fd) }
