package buffer

import (
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// diskGaugeEvery is how often diskGauge walks the directory at most.
const diskGaugeEvery = time.Second

// diskGauge caches the real size of a directory: Stats is called on every
// metrics scrape and by the budget check, a walk costs a stat per file.
type diskGauge struct {
	mu   sync.Mutex
	at   time.Time
	last int64
}

// size returns dir's size, measured again when the last measure is older
// than diskGaugeEvery.
func (g *diskGauge) size(dir string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.at.IsZero() && time.Since(g.at) < diskGaugeEvery {
		return g.last
	}
	g.last, g.at = dirSize(dir), time.Now()
	return g.last
}

// set records a measure taken elsewhere (fresher than the cached one).
func (g *diskGauge) set(size int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last, g.at = size, time.Now()
}

// dirSize returns the disk space the files under dir take: allocated
// blocks, as du counts them (a sparse or preallocated file counts what it
// occupies, not its length). Files that vanish during the walk are skipped.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += info.Size()
		}
		return nil
	})
	return n
}

// diskBudget is what the directory should stay under.
func (q *queue) diskBudget() int64 {
	return q.opts.MaxBytes + q.opts.OutcomeMaxBytes + q.tune.diskOverhead
}

// freeSpaceEvery is how often the committer reads the filesystem's free
// space at most.
const freeSpaceEvery = 250 * time.Millisecond

// freeSpace caches the free space of a filesystem (statfs): the committer
// checks it before each batch.
type freeSpace struct {
	at    time.Time
	bytes int64 // -1: unknown
}

// of returns the bytes free to an unprivileged writer on dir's filesystem,
// -1 if statfs fails.
func (f *freeSpace) of(dir string) int64 {
	if !f.at.IsZero() && time.Since(f.at) < freeSpaceEvery {
		return f.bytes
	}
	var st syscall.Statfs_t
	f.bytes, f.at = -1, time.Now()
	if err := syscall.Statfs(dir, &st); err == nil {
		f.bytes = int64(st.Bavail) * int64(st.Bsize)
	}
	return f.bytes
}

// checkFree updates q.lowDisk from the filesystem's free space, logging
// when appends stop and start again. Run by the committer.
func (q *queue) checkFree() {
	free := q.free.of(q.opts.Path)
	low := free >= 0 && free < q.tune.minFree
	if low != q.lowDisk {
		if low {
			q.log.Error("buffer: the filesystem is nearly full; appends are refused until space is free",
				"free_bytes", free, "reserve_bytes", q.tune.minFree)
		} else {
			q.log.Info("buffer: the filesystem has room again; appends are taken", "free_bytes", free)
		}
	}
	q.lowDisk = low
}
