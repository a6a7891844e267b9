package buffer

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Defaults of Options fields.
const (
	DefaultMaxBytes        int64 = 1 << 30
	DefaultIdempotencyTTL        = 24 * time.Hour
	DefaultOutcomeTTL            = 24 * time.Hour
	DefaultMaxOutcomeBody        = 64 << 10
	DefaultOutcomeMaxBytes int64 = 256 << 20
)

// DiskOverhead is what the queue's directory may hold beyond MaxBytes +
// OutcomeMaxBytes, from the tuning below: the memtable files (3 × 8 MiB),
// level-0 tables up to the write stall (9 × ~8 MiB), the base level (10
// MiB), the manifest and discard file, idempotency entries of queued
// records, and deleted data compactions have not dropped yet (once the
// directory passes a quarter of it above MaxBytes + OutcomeMaxBytes, the
// GC goroutine flattens the tree: see gc.go). Stats.DiskBudget includes it.
const DiskOverhead int64 = 128 << 20

// HeapReserve is the Go heap an open queue may keep live under sustained
// writes, from the tuning below: Badger keeps up to 8 table-builder arenas
// pooled on the Go heap while it builds tables (each grows to what its
// largest build needed, ~14 MiB for a flushed 8 MiB memtable), the
// memtables' arenas (3 × 8 MiB), and the queue's copies of recently read
// segments (32 MiB). TestHeapReserve measured peaks of 114–138 MiB. A
// process's soft memory limit (GOMEMLIMIT) belongs well above it, or the
// collector runs back to back.
const HeapReserve int64 = 192 << 20

// SoftMemoryLimit is the Go soft memory limit (GOMEMLIMIT) for a process
// that runs one queue: HeapReserve plus 128 MiB for requests in flight and
// the garbage between collections. `edge run` sets it by default.
const SoftMemoryLimit = HeapReserve + 128<<20

// MaxRecordBytes bounds the encoded size of one record (body, headers and
// fields). Append refuses a larger record with an error.
const MaxRecordBytes = 32 << 20

// Read limits: max <= 0 means DefaultReadMax; max is capped at MaxReadMax.
const (
	DefaultReadMax = 256
	MaxReadMax     = 65536
)

// DeadLetters page size: limit <= 0 means DefaultDeadLetterPage; it is
// capped at MaxDeadLetterPage.
const (
	DefaultDeadLetterPage = 100
	MaxDeadLetterPage     = 1000
)

// tuning are the internal knobs: Badger's memory and file sizes, the group
// commit bounds and the GC cadence. Open uses defaultTuning; tests and
// benchmarks may use others.
type tuning struct {
	memTableSize   int64
	numMemtables   int
	baseTableSize  int64 // SST size at the base level
	blockSize      int   // SST block size
	tableSizeMult  int   // SST size factor per level below the base
	valueThreshold int64
	blockCache     int64
	indexCache     int64
	vlogFileSize   int64
	compression    options.CompressionType
	compactors     int

	maxBatchOps   int   // ops per group commit
	maxBatchBytes int64 // estimated bytes per group commit

	gcInterval      time.Duration // periodic reclaim check and value-log GC
	gcDrainDelay    time.Duration // the same, this long after the queue became empty
	reclaimMin      int64         // backlog (peak Bytes) after which a drained partition is reclaimed
	reclaimInterval time.Duration // least time between two reclaims
	compactInterval time.Duration // least time between two flattens (gc.go)
	budgetInterval  time.Duration // outcome age trim and disk budget check
	diskOverhead    int64         // DiskOverhead (tests lower it)
	minFree         int64         // free space on the filesystem below which appends are refused (ErrDiskLow)

	sync syncMode // how a flight is made durable

	l0Tables, l0Stall int // level-0 tables that start a compaction / stall writes; 0 = from numMemtables

	beforeSync func(*queue) error // tests only: run by the syncer before each sync; an error fails the sync

	rehomeFailAfter int // tests only: rehome stops with an error after this many committed moves (a crash part-way); 0 = never
}

// syncMode is how the syncer makes committed writes durable.
type syncMode uint8

const (
	// syncWAL fdatasyncs every memtable file (active and rotated) and, when
	// the flight wrote to the value log, calls DB.Sync (walsync.go).
	syncWAL syncMode = iota
	// syncDB calls DB.Sync alone: the active memtable and the value log.
	// It misses memtables rotated between a commit and the sync (kept for
	// the test that shows the gap and for the benchmark).
	syncDB
	// syncWrites has Badger sync inside every write (Options.SyncWrites):
	// the committer waits for each sync, the syncer has nothing to do.
	syncWrites
)

// defaultTuning is tuned for a proxy's queue on a small machine, from the
// measurements in docs/benchmarks-buffer.md:
//   - memtables of 8 MiB, 2 of them: Badger allocates each memtable's arena
//     (plus its largest transaction) on the Go heap up front; with 16 MiB
//     memtables the anonymous RSS peaked ~90 MiB higher while draining.
//   - 1 MiB tables at every level (multiplier 1): compactions build up to 5
//     tables at once, each in a buffer twice the table size; doubling sizes
//     per level made those buffers dominate the heap (88 MiB measured).
//   - value threshold 1 MiB (Badger's maximum): records stay in the LSM tree.
//     Reclaiming a drained partition drops whole tables, and value-log space
//     referenced only from dropped tables is never collected (Badger's GC
//     works from compaction statistics); with values in the tree, the disk
//     returns fully. Cost: 4 KiB bodies append ~2.4× slower than with a
//     1 KiB threshold; 300-byte bodies are not affected.
//   - 16 KiB blocks instead of Badger's 4 KiB: a table builder starts each
//     block in a 4 KiB buffer and, for an entry larger than that (most
//     segments), allocates a second one and copies, so a memtable of
//     segments needed twice its size in builder arena. The arenas are pooled
//     (up to 8) and each keeps what its largest build needed: the queue's
//     peak live heap under sustained writes was 193–239 MiB with 4 KiB
//     blocks and 116 MiB with 16 KiB (TestHeapReserve); appends unchanged
//     within noise.
//   - no compression, no block cache: tables are memory-mapped and read in
//     place; a block cache would only copy them.
func defaultTuning() tuning {
	return tuning{
		memTableSize:    8 << 20,
		numMemtables:    2,
		baseTableSize:   1 << 20,
		blockSize:       16 << 10,
		tableSizeMult:   1,
		valueThreshold:  1 << 20,
		blockCache:      0,
		indexCache:      0,
		vlogFileSize:    64 << 20,
		compression:     options.None,
		compactors:      2,
		maxBatchOps:     1024,
		maxBatchBytes:   4 << 20,
		gcInterval:      time.Minute,
		gcDrainDelay:    2 * time.Second,
		reclaimMin:      32 << 20,
		reclaimInterval: 5 * time.Minute,
		compactInterval: 30 * time.Second,
		budgetInterval:  5 * time.Second,
		diskOverhead:    DiskOverhead,
		minFree:         DiskOverhead,
	}
}

// partState is the in-memory state of one partition: the persisted counters
// plus what Stats caches about the oldest record.
type partState struct {
	partMeta
	oldest    time.Time // ReceivedAt of the record at Head, when headKnown
	headKnown bool      // Head is the Seq of the oldest queued record
	gen       uint64    // bumped by every committed change
	peak      int64     // highest Bytes since the last reclaim (or Open)
}

// queue implements Queue on Badger.
type queue struct {
	opts  Options
	fsync bool
	tune  tuning
	db    *badger.DB
	log   *slog.Logger

	ops     chan *op      // to the committer
	closing chan struct{} // closed by Close: the committer finishes and stops
	syncCh  chan *flight  // committer → syncer; closed by the committer when it stops
	stopped chan struct{} // closed by the syncer once both have stopped

	// durable[p] is the highest Seq of partition p whose write was synced
	// (or committed, without Fsync): Read shows nothing beyond it, so a
	// record is never delivered before its Append could succeed.
	durable []atomic.Uint64

	// rw guards the DB handle against Close: every reader holds it shared.
	rw     sync.RWMutex
	closed atomic.Bool

	// failure is set by the first failed sync (ErrSyncFailed) and never
	// cleared: the committer takes no write after it and Read fails.
	failure atomic.Pointer[error]

	wal *walSyncer // owned by the syncer

	closeOnce sync.Once
	closeErr  error

	mu          sync.Mutex // guards parts, totalBytes, quarantined, lastErr
	parts       []partState
	totalBytes  int64
	quarantined int64
	// open[p] holds the finished sets of partition p's segments some of
	// whose records are final (guarded by mu; replaced, never changed in
	// place, by the committer).
	open []map[uint64]*segState
	// outcomeBytes is the encoded size of the kept outcomes (guarded by mu).
	outcomeBytes int64
	// segs[p] holds copies of partition p's segments read last (guarded by
	// mu), segsBytes their total size.
	segs      []segCache
	segsBytes int

	disk    diskGauge // the directory's real size, measured at most once a second
	free    freeSpace // the filesystem's free space; the committer's only
	lowDisk bool      // the committer's only: the last check found less than DiskOverhead free
	lastErr error

	notify []chan struct{}
	tails  []tail // newest durable records per partition, for readers that keep up
	freed  chan struct{}

	compactions atomic.Int64 // flattens run (gc.go), for tests

	gcKick   chan struct{}
	trimKick chan struct{} // the outcomes passed their budget
	// oldOutcomes: outcomes of earlier versions (o <id>) may be left; set
	// at Open, cleared by the trim that finds none.
	oldOutcomes atomic.Bool
	gcCancel    context.CancelFunc
	wg          sync.WaitGroup
}

var _ Queue = (*queue)(nil)

// Open opens (creating if needed) the queue stored in opts.Path and starts
// its committer, syncer and GC goroutines, which Close stops. Open reads
// the persisted counters: it does not scan the queue, whatever its size.
func Open(opts Options) (Queue, error) {
	return openTuned(opts, defaultTuning())
}

func (o *Options) resolve() (fsync bool, err error) {
	if o.Path == "" {
		return false, errors.New("buffer: Options.Path is required")
	}
	if o.Partitions < 1 || o.Partitions > maxPartitions {
		return false, fmt.Errorf("buffer: Options.Partitions = %d, want 1..%d", o.Partitions, maxPartitions)
	}
	if o.MaxBytes < 0 || o.IdempotencyTTL < 0 || o.OutcomeTTL < 0 || o.MaxOutcomeBody < 0 || o.OutcomeMaxBytes < 0 {
		return false, errors.New("buffer: negative Options value")
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.IdempotencyTTL == 0 {
		o.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if o.OutcomeTTL == 0 {
		o.OutcomeTTL = DefaultOutcomeTTL
	}
	if o.OutcomeMaxBytes == 0 {
		o.OutcomeMaxBytes = DefaultOutcomeMaxBytes
	}
	if o.MaxOutcomeBody == 0 {
		o.MaxOutcomeBody = DefaultMaxOutcomeBody
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o.Fsync == nil || *o.Fsync, nil
}

func badgerOptions(path string, t tuning, log *slog.Logger, readOnly bool) badger.Options {
	o := badger.DefaultOptions(path).
		WithSyncWrites(t.sync == syncWrites && !readOnly). // else the syncer syncs once per group commit
		WithLogger(badgerLogger{log}).
		WithMetricsEnabled(false).
		WithDetectConflicts(false). // one writer
		WithNumVersionsToKeep(1).
		WithMemTableSize(t.memTableSize).
		WithNumMemtables(t.numMemtables).
		WithNumLevelZeroTables(cmp.Or(t.l0Tables, t.numMemtables+1)).
		WithNumLevelZeroTablesStall(cmp.Or(t.l0Stall, 3*(t.numMemtables+1))).
		WithValueThreshold(t.valueThreshold).
		WithBlockCacheSize(t.blockCache).
		WithIndexCacheSize(t.indexCache).
		WithValueLogFileSize(t.vlogFileSize).
		WithCompression(t.compression).
		WithNumCompactors(t.compactors).
		WithNumGoroutines(2).
		WithBaseTableSize(t.baseTableSize).
		WithBlockSize(t.blockSize).
		WithReadOnly(readOnly)
	o.TableSizeMultiplier = t.tableSizeMult
	return o
}

func openTuned(opts Options, t tuning) (Queue, error) {
	fsync, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Path, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: create %s: %w", opts.Path, err)
	}
	if dropped, err := dropEmptyMemtables(opts.Path); err != nil {
		return nil, err
	} else if len(dropped) > 0 && opts.Logger != nil {
		opts.Logger.Warn("removed empty memtable files left by a power cut", "component", "buffer", "files", dropped)
	}
	db, err := badger.Open(badgerOptions(opts.Path, t, opts.Logger, false))
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", opts.Path, err)
	}
	q := &queue{
		opts:     opts,
		fsync:    fsync,
		tune:     t,
		db:       db,
		log:      opts.Logger.With("component", "buffer"),
		ops:      make(chan *op, 4096),
		closing:  make(chan struct{}),
		syncCh:   make(chan *flight, 1024),
		stopped:  make(chan struct{}),
		durable:  make([]atomic.Uint64, opts.Partitions),
		parts:    make([]partState, opts.Partitions),
		notify:   make([]chan struct{}, opts.Partitions),
		tails:    make([]tail, opts.Partitions),
		segs:     make([]segCache, opts.Partitions),
		freed:    make(chan struct{}, 1),
		gcKick:   make(chan struct{}, 1),
		trimKick: make(chan struct{}, 1),
		wal:      newWALSyncer(opts.Path),
	}
	for i := range q.notify {
		q.notify[i] = make(chan struct{}, 1)
	}
	q.open = make([]map[uint64]*segState, opts.Partitions)
	if err := q.load(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if moved, err := q.rehome(); err != nil {
		_ = db.Close()
		return nil, err
	} else if moved {
		clear(q.parts)
		q.totalBytes, q.quarantined, q.outcomeBytes = 0, 0, 0
		if err := q.load(); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	for p := range q.parts {
		q.durable[p].Store(q.parts[p].NextSeq - 1)
	}
	if err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixOutcomeV1}})
		defer it.Close()
		it.Rewind()
		q.oldOutcomes.Store(it.Valid())
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("buffer: open %s: %w", opts.Path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.gcCancel = cancel
	q.wg.Add(3)
	go q.commitLoop()
	go q.syncLoop()
	go q.gcLoop(ctx)
	return q, nil
}

// load reads the persisted counters. A partition whose counters are
// missing while it holds keys, or unreadable, has them rebuilt by scanning
// that partition (logged; this never happens in normal operation).
func (q *queue) load() error {
	return q.db.View(func(txn *badger.Txn) error {
		for p := range q.parts {
			open, err := loadOpen(txn, p)
			if err != nil {
				return err
			}
			q.open[p] = open
		}
		for p := range q.parts {
			st := &q.parts[p]
			item, err := txn.Get(metaKey(p))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				last, err := lastSeq(txn, prefixQueue, p)
				if err != nil {
					return err
				}
				lastDead, err := lastSeq(txn, prefixDead, p)
				if err != nil {
					return err
				}
				lastSeg, err := lastSeq(txn, prefixSeg, p)
				if err != nil {
					return err
				}
				st.NextSeq, st.Head = 1, 1
				if last > 0 || lastDead > 0 || lastSeg > 0 {
					q.log.Error("buffer: counters missing, rebuilding them by a scan", "partition", p)
					if st.partMeta, err = rebuildMeta(txn, p, q.open[p]); err != nil {
						return err
					}
				}
			case err != nil:
				return fmt.Errorf("buffer: read counters of partition %d: %w", p, err)
			default:
				var m partMeta
				if err := item.Value(func(v []byte) (err error) { m, err = decodePartMeta(v); return }); err != nil {
					q.log.Error("buffer: counters unreadable, rebuilding them by a scan", "partition", p, "err", err)
					if m, err = rebuildMeta(txn, p, q.open[p]); err != nil {
						return err
					}
				}
				st.partMeta = m
				st.NextSeq = max(st.NextSeq, 1)
			}
			st.headKnown = st.Records == 0
			st.peak = st.Bytes
			q.totalBytes += st.Bytes
		}
		item, err := txn.Get(globalKey)
		if err == nil {
			var g globalMeta
			if err := item.Value(func(v []byte) (err error) { g, err = decodeGlobalMeta(v); return }); err != nil {
				q.log.Error("buffer: global counters unreadable, quarantine count restarts at 0", "err", err)
			}
			q.quarantined = g.Quarantined
			q.outcomeBytes = g.OutcomeBytes
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("buffer: read global counters: %w", err)
		}
		// Records of partitions beyond Partitions (the count was lowered) are
		// not served: say so.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMeta}})
		defer it.Close()
		for it.Seek(metaKey(len(q.parts))); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 3 {
				continue
			}
			p := int(k[1])<<8 | int(k[2])
			var m partMeta
			if err := it.Item().Value(func(v []byte) (err error) { m, err = decodePartMeta(v); return }); err != nil {
				continue
			}
			if m.Records > 0 || m.Dead > 0 {
				q.log.Warn("buffer holds records of a partition beyond the configured count; they are not delivered",
					"partition", p, "partitions", len(q.parts), "records", m.Records, "dead_letters", m.Dead)
			}
		}
		return nil
	})
}

// rebuildMeta recomputes partition p's counters by scanning its queued
// records and dead letters.
func rebuildMeta(txn *badger.Txn, p int, open map[uint64]*segState) (partMeta, error) {
	var m partMeta
	err := scanLive(txn, p, 1, func(first uint64, i int) bool {
		st := open[first]
		return st != nil && st.isDone(i)
	}, func(lr *liveRec) bool {
		if lr.seq == 0 {
			return true
		}
		m.NextSeq = max(m.NextSeq, lr.seq+1)
		if m.Records == 0 {
			m.Head = lr.seq
		}
		m.Records++
		m.Bytes += int64(len(lr.value))
		return true
	})
	if err != nil {
		return m, err
	}
	// NextSeq must pass every Seq ever given, final ones included.
	lastSeg, err := lastSeq(txn, prefixSeg, p)
	if err != nil {
		return m, err
	}
	m.NextSeq = max(m.NextSeq, lastSeg+1)
	pre := partPrefix(prefixDead, p)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
	for it.Seek(seqKey(prefixDead, p, 1)); it.Valid(); it.Next() {
		_, _, seq, ok := parseSeqKey(it.Item().Key())
		if !ok {
			continue
		}
		m.NextSeq = max(m.NextSeq, seq+1)
		m.Dead++
	}
	it.Close()
	m.NextSeq = max(m.NextSeq, 1)
	if m.Records == 0 {
		m.Head = m.NextSeq
	}
	return m, nil
}

// loadOpen reads the finished sets of partition p's segments.
func loadOpen(txn *badger.Txn, p int) (map[uint64]*segState, error) {
	open := map[uint64]*segState{}
	pre := partPrefix(prefixSegDone, p)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
	defer it.Close()
	for it.Seek(pre); it.Valid(); it.Next() {
		_, _, first, ok := parseSeqKey(it.Item().Key())
		if !ok {
			continue
		}
		var st *segState
		err := it.Item().Value(func(v []byte) (err error) { st, err = decodeSegState(v); return })
		if err != nil {
			// A damaged finished set: its records are delivered again
			// (at-least-once), never lost.
			continue
		}
		open[first] = st
	}
	return open, nil
}

// lastSeq returns the Seq of the last key of partition p under prefix, 0 if
// none, by one reverse seek.
func lastSeq(txn *badger.Txn, prefix byte, p int) (uint64, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefix, p), Reverse: true})
	defer it.Close()
	it.Seek(seqKey(prefix, p, ^uint64(0)))
	if !it.Valid() {
		return 0, nil
	}
	_, _, seq, ok := parseSeqKey(it.Item().Key())
	if !ok {
		return 0, fmt.Errorf("buffer: unexpected key %x", it.Item().Key())
	}
	if prefix == prefixSeg {
		// The last Seq of the segment.
		var n int
		if err := it.Item().Value(func(v []byte) (err error) { n, err = segmentCount(v); return }); err != nil || n == 0 {
			return seq, nil
		}
		return seq + uint64(n) - 1, nil
	}
	return seq, nil
}

// view runs fn in a read transaction unless the queue is closed.
func (q *queue) view(fn func(txn *badger.Txn) error) error {
	q.rw.RLock()
	defer q.rw.RUnlock()
	if q.closed.Load() {
		return ErrClosed
	}
	return q.db.View(fn)
}

func (q *queue) checkPartition(p int) error {
	if p < 0 || p >= len(q.parts) {
		return fmt.Errorf("buffer: partition %d out of range [0,%d)", p, len(q.parts))
	}
	return nil
}

// corruptValue is a value that did not decode, to be quarantined. For
// records of a segment, seg is the segment's first Seq (key is the
// segment's key) and index..index+span-1 the records set aside.
type corruptValue struct {
	key, value []byte
	err        error

	p     int
	seg   uint64
	index int
	span  int
}

// Read implements Queue. max <= 0 means DefaultReadMax, maxBytes <= 0 no
// byte bound. Corrupt records are quarantined and skipped.
func (q *queue) Read(p int, after uint64, max int, maxBytes int) ([]*Record, error) {
	if err := q.checkPartition(p); err != nil {
		return nil, err
	}
	if max <= 0 {
		max = DefaultReadMax
	}
	max = min(max, MaxReadMax)
	if after == ^uint64(0) {
		return nil, nil
	}
	var (
		out     []*Record
		corrupt []corruptValue
		total   int
	)
	if err := q.failed(); err != nil {
		return nil, err
	}
	durable := q.durable[p].Load()
	if after >= durable {
		return nil, nil
	}
	if q.closed.Load() {
		return nil, ErrClosed
	}
	if recs := q.tails[p].take(after, max, maxBytes); recs != nil {
		return recs, nil
	}
	hit, keep := q.segCached(p, after+1)
	err := q.view(func(txn *badger.Txn) error {
		var ierr error
		err := scanLiveCached(txn, p, after+1, q.doneFunc(p), hit, keep, func(lr *liveRec) bool {
			if lr.seq > durable {
				return false // not synced yet
			}
			var rec *Record
			if lr.err == nil {
				rec, lr.err = liveRecord(lr, p, true)
			}
			if lr.err != nil {
				corrupt = append(corrupt, corruptOf(p, lr))
				return true
			}
			if len(out) > 0 && maxBytes > 0 && total+len(rec.Body) > maxBytes {
				return false
			}
			out = append(out, rec)
			total += len(rec.Body)
			return len(out) < max
		})
		if err != nil && len(out) == 0 {
			ierr = fmt.Errorf("buffer: read partition %d: %w", p, err)
		}
		return ierr
	})
	if len(corrupt) > 0 {
		q.quarantine(corrupt)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// doneFunc tells which records of partition p's segments are final, from
// the finished sets in memory.
func (q *queue) doneFunc(p int) doneFunc {
	return func(first uint64, i int) bool {
		q.mu.Lock()
		st := q.open[p][first]
		q.mu.Unlock()
		return st != nil && st.isDone(i)
	}
}

// corruptOf is the quarantine request for a damaged record met by scanLive.
func corruptOf(p int, lr *liveRec) corruptValue {
	c := corruptValue{key: lr.key, value: bytes.Clone(lr.value), err: lr.err, p: p}
	if lr.loc.seg != 0 {
		c.seg, c.index, c.span = lr.loc.seg, lr.index, max(lr.span, 1)
	}
	return c
}

// quarantine moves corrupt values aside through the committer. Failures are
// logged: the caller skips the values either way.
func (q *queue) quarantine(vals []corruptValue) {
	for _, c := range vals {
		q.log.Error("buffer: corrupt record quarantined", "key", fmt.Sprintf("%x", c.key), "bytes", len(c.value), "err", c.err)
	}
	o := &op{kind: opQuarantine, corrupt: vals}
	if err := q.submit(context.Background(), o); err != nil {
		q.log.Error("buffer: quarantine failed", "err", err)
		return
	}
	if o.err != nil {
		q.log.Error("buffer: quarantine failed", "err", o.err)
	}
}

// Notify implements Queue. For p out of range it returns nil (a channel that
// never fires).
func (q *queue) Notify(p int) <-chan struct{} {
	if p < 0 || p >= len(q.notify) {
		return nil
	}
	return q.notify[p]
}

// Freed implements Queue.
func (q *queue) Freed() <-chan struct{} { return q.freed }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Parked implements Queue.
func (q *queue) Parked(p int) (map[string]string, error) {
	if err := q.checkPartition(p); err != nil {
		return nil, err
	}
	out := map[string]string{}
	err := q.view(func(txn *badger.Txn) error {
		pre := partPrefix(prefixParked, p)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
		defer it.Close()
		for it.Seek(pre); it.Valid(); it.Next() {
			key := string(it.Item().Key()[len(pre):])
			if err := it.Item().Value(func(v []byte) error { out[key] = string(v); return nil }); err != nil {
				return fmt.Errorf("buffer: parked keys of partition %d: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeadLetters implements Queue. Dead letters are listed by partition, then
// by Seq (the order the records were received in); the cursor is opaque.
// Records are returned without their bodies.
func (q *queue) DeadLetters(p int, cursor string, limit int) ([]DeadLetter, string, error) {
	if p >= 0 {
		if err := q.checkPartition(p); err != nil {
			return nil, "", err
		}
	}
	if limit <= 0 {
		limit = DefaultDeadLetterPage
	}
	limit = min(limit, MaxDeadLetterPage)
	prefix := []byte{prefixDead}
	if p >= 0 {
		prefix = partPrefix(prefixDead, p)
	}
	start := prefix
	if cursor != "" {
		var cp int
		var cs uint64
		if _, err := fmt.Sscanf(cursor, "%d.%d", &cp, &cs); err != nil || cp < 0 || cp >= maxPartitions || cs == ^uint64(0) {
			return nil, "", fmt.Errorf("buffer: bad dead letter cursor %q", cursor)
		}
		start = seqKey(prefixDead, cp, cs+1)
	}
	var (
		out     []DeadLetter
		corrupt []corruptValue
		next    string
	)
	err := q.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		parked := map[string]string{} // parkedKey → id, read once per key
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			_, dp, seq, ok := parseSeqKey(item.Key())
			if len(out) == limit {
				next = fmt.Sprintf("%d.%d", out[len(out)-1].Record.Partition, out[len(out)-1].Record.Seq)
				return nil
			}
			var (
				rec *Record
				o   *Outcome
			)
			err := item.Value(func(v []byte) error {
				var derr error
				if ok {
					rec, o, derr = decodeDead(v, dp, seq, false)
				} else {
					derr = corruptf("malformed dead letter key")
				}
				if derr != nil {
					corrupt = append(corrupt, corruptValue{key: item.KeyCopy(nil), value: bytes.Clone(v), err: derr})
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("buffer: read dead letters: %w", err)
			}
			if rec == nil {
				continue
			}
			pk := string(parkedKey(dp, rec.Key))
			by, seen := parked[pk]
			if !seen {
				item, err := txn.Get([]byte(pk))
				switch {
				case errors.Is(err, badger.ErrKeyNotFound):
				case err != nil:
					return fmt.Errorf("buffer: read parked key: %w", err)
				default:
					v, err := item.ValueCopy(nil)
					if err != nil {
						return fmt.Errorf("buffer: read parked key: %w", err)
					}
					by = string(v)
				}
				parked[pk] = by
			}
			out = append(out, DeadLetter{Record: rec, Outcome: *o, Parked: by == rec.ID})
		}
		return nil
	})
	if len(corrupt) > 0 {
		q.quarantine(corrupt)
	}
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// Lookup implements Queue. The Record of a queued or dead delivery comes
// without its Body.
func (q *queue) Lookup(id string) (Delivery, error) {
	if id == "" {
		return Delivery{}, ErrNotFound
	}
	var d Delivery
	err := q.view(func(txn *badger.Txn) error {
		item, err := txn.Get(stringKey(prefixIndex, id))
		if err == nil {
			var (
				state byte
				p     int
				seq   uint64
			)
			if err := item.Value(func(v []byte) (err error) { state, p, seq, err = decodeIndex(v); return }); err != nil {
				return fmt.Errorf("buffer: lookup %s: %w", id, err)
			}
			prefix := prefixQueue
			if state == indexDead {
				prefix = prefixDead
			}
			item, err := txn.Get(seqKey(prefix, p, seq))
			if err != nil {
				if errors.Is(err, badger.ErrKeyNotFound) {
					return ErrNotFound // quarantined
				}
				return fmt.Errorf("buffer: lookup %s: %w", id, err)
			}
			return item.Value(func(v []byte) error {
				if state == indexQueued {
					rec, err := decodeRecord(v, p, seq, false)
					if err != nil {
						return fmt.Errorf("buffer: lookup %s: %w", id, err)
					}
					d = Delivery{Status: StatusQueued, Record: rec}
					return nil
				}
				rec, out, err := decodeDead(v, p, seq, false)
				if err != nil {
					return fmt.Errorf("buffer: lookup %s: %w", id, err)
				}
				d = Delivery{Status: StatusDead, Record: rec, Outcome: out}
				return nil
			})
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("buffer: lookup %s: %w", id, err)
		}
		item, err = txn.Get(stringKey(prefixOutcome, id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			item, err = txn.Get(stringKey(prefixOutcomeV1, id))
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			rec, err := q.findQueued(txn, id)
			if err != nil {
				return err
			}
			d = Delivery{Status: StatusQueued, Record: rec}
			return nil
		}
		if err != nil {
			return fmt.Errorf("buffer: lookup %s: %w", id, err)
		}
		return item.Value(func(v []byte) error {
			out, err := decodeOutcome(v)
			if err != nil {
				return fmt.Errorf("buffer: lookup %s: %w", id, err)
			}
			d = Delivery{Status: out.Status, Outcome: out}
			return nil
		})
	})
	if err != nil {
		return Delivery{}, err
	}
	return d, nil
}

// findQueued looks for queued record id in the segments, partition by
// partition from each head (a record in a segment has no id index: the
// cost of an index entry and its tombstone per record is what the segment
// layout saves). It costs a walk of the queued records, so Lookup of a
// queued id is slow behind a deep backlog; outcomes, dead letters and
// idempotent repeats are found by key. ErrNotFound if it is not queued.
func (q *queue) findQueued(txn *badger.Txn, id string) (*Record, error) {
	for p := range q.parts {
		durable := q.durable[p].Load()
		q.mu.Lock()
		head := q.parts[p].Head
		q.mu.Unlock()
		var found *Record
		err := scanLive(txn, p, head, q.doneFunc(p), func(lr *liveRec) bool {
			if lr.seq > durable {
				return false
			}
			if lr.err != nil {
				return true
			}
			if got, ok := recordID(lr.value); !ok || got != id {
				return true
			}
			rec, err := liveRecord(lr, p, false)
			if err == nil {
				found = rec
			}
			return false
		})
		if err != nil {
			return nil, fmt.Errorf("buffer: lookup %s: %w", id, err)
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, ErrNotFound
}

// Stats implements Queue. It finds the oldest record of a partition whose
// head was removed by one seek from the previous head.
func (q *queue) Stats() Stats {
	q.mu.Lock()
	s := Stats{
		Bytes:        q.totalBytes,
		Partitions:   make([]PartitionStats, len(q.parts)),
		Quarantined:  int(q.quarantined),
		DiskBytes:    q.disk.size(q.opts.Path),
		DiskBudget:   q.diskBudget(),
		OutcomeBytes: q.outcomeBytes,
	}
	type want struct {
		p    int
		head uint64
		gen  uint64
	}
	var seek []want
	for p, st := range q.parts {
		s.Partitions[p] = PartitionStats{
			Records:     int(st.Records),
			Bytes:       st.Bytes,
			DeadLetters: int(st.Dead),
		}
		if st.Records > 0 {
			if st.headKnown {
				s.Partitions[p].Oldest = st.oldest
			} else {
				seek = append(seek, want{p, st.Head, st.gen})
			}
		}
	}
	q.mu.Unlock()
	for _, w := range seek {
		var (
			seq uint64
			at  time.Time
		)
		hit, keep := q.segCached(w.p, w.head)
		err := q.view(func(txn *badger.Txn) error {
			return scanLiveCached(txn, w.p, w.head, q.doneFunc(w.p), hit, keep, func(lr *liveRec) bool {
				if lr.err != nil || lr.seq == 0 {
					return true
				}
				rec, err := decodeRecord(lr.value, w.p, lr.seq, false)
				if err != nil {
					return true // corrupt: Read quarantines it
				}
				seq, at = lr.seq, rec.ReceivedAt
				return false
			})
		})
		if err != nil || seq == 0 {
			continue
		}
		s.Partitions[w.p].Oldest = at
		q.mu.Lock()
		if st := &q.parts[w.p]; st.gen == w.gen {
			st.Head, st.oldest, st.headKnown = seq, at, true
		}
		q.mu.Unlock()
	}
	return s
}

// Err implements Queue.
func (q *queue) Err() error {
	if err := q.failed(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lastErr
}

// Close implements Queue: pending operations are finished, the committer and
// the GC goroutine stopped, and Badger closed. Safe to call twice.
func (q *queue) Close() error {
	q.closeOnce.Do(func() {
		q.closed.Store(true)
		close(q.closing)
		q.gcCancel()
		q.wg.Wait()
		q.rw.Lock()
		defer q.rw.Unlock()
		if err := q.db.Close(); err != nil {
			q.closeErr = fmt.Errorf("buffer: close: %w", err)
		}
	})
	return q.closeErr
}

// badgerLogger hands Badger's warnings and errors to slog; its info and
// debug chatter is dropped.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger: "+trimNL(fmt.Sprintf(f, a...)), "component", "buffer")
}

func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger: "+trimNL(fmt.Sprintf(f, a...)), "component", "buffer")
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
