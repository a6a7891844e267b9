package buffer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The committer is the queue's only writer. Callers encode their records and
// outcomes in their own goroutine, send an op, and wait for its done channel.
// The committer takes every op that is pending (up to tuning.maxBatchOps /
// maxBatchBytes) and writes them in one Badger transaction (split only if
// the batch exceeds Badger's transaction size). Batches holding appends (or
// the rare changes that must survive a crash: dead letters, replays,
// discards, quarantines) go to the syncer when Fsync is on: it calls
// DB.Sync once for every batch committed since its previous sync, then
// releases their waiters, while the committer already commits the next
// batch. Other batches (acks, nacks) are released at once. Counters are
// written in the same transaction as the changes they count, so what Badger
// recovers after a crash is always consistent.
//
// A Badger transaction was measured against a WriteBatch for this job
// (BenchmarkBadgerBatch): the same speed within noise. A transaction is
// atomic (the counters cannot be split from their records) and reads its
// own pending writes (idempotency keys within a batch), so it is used.

type opKind uint8

const (
	opAppend opKind = iota
	opNack
	opAck
	opDead
	opReplay
	opDiscard
	opQuarantine
	opTrim    // deletes the oldest outcomes (trim.go)
	opReclaim // not a write: DropPrefix of empty partitions, run between batches
)

// appendItem is one record of an Append, encoded by the caller.
type appendItem struct {
	p        int
	id       string
	scope    string          // IdempotencyScope, "" = none
	digest   [digestLen]byte // of the record's query and body, when scope != ""
	value    []byte
	received time.Time
	rec      *Record // what Append was given: copied to the tail once durable
}

// op is one request to the committer. The committer fills the outputs and
// closes done; until then the caller does not touch it.
type op struct {
	kind opKind

	items []appendItem // append

	p        int    // nack, ack, dead
	seq      uint64 // nack, ack, dead
	loc      recLoc // nack, ack, dead: where the record is, if the caller's record knows
	retried  bool   // ack, dead: the record has retry state to delete
	id       string // nack, ack, dead, replay, discard
	park     bool   // dead
	outcome  []byte // ack, dead: encoded outcome
	forget   string // ack: idempotency scope to forget (a relayed 429: nothing was applied)
	mustSync bool   // ack: synced before it returns (a drop its client is told of)
	attempts int    // nack
	next     time.Time
	lastErr  string

	corrupt []corruptValue // quarantine
	parts   []int          // reclaim

	results  []AppendResult // append
	seqs     []uint64       // append
	locs     []recLoc       // append: where each record was stored (set at commit)
	replayed *Record        // replay
	trimmed  int            // trim: outcomes deleted
	// trimMode: why the trim pass this op belongs to started (trimIdle for
	// its first op); set by the op for the next one.
	trimMode trimMode
	err      error
	done     chan struct{}
}

// estimate is the op's size for batch bounding.
func (o *op) estimate() int64 {
	n := int64(128 + len(o.outcome))
	for _, it := range o.items {
		n += int64(len(it.value) + len(it.id) + len(it.scope) + 64)
	}
	for _, c := range o.corrupt {
		n += int64(len(c.key) + len(c.value) + 32)
	}
	return n
}

// submit hands o to the committer and waits until it is done. A nil error
// means o ran: its outcome is in o.err and the outputs. If ctx ends first
// the op may still run.
func (q *queue) submit(ctx context.Context, o *op) error {
	if q.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	o.done = make(chan struct{})
	select {
	case q.ops <- o:
	case <-q.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-q.stopped:
		select {
		case <-o.done:
			return nil
		default:
			return ErrClosed
		}
	}
}

// commitLoop is the committer goroutine. On Close it commits what is
// already pending, then stops.
func (q *queue) commitLoop() {
	defer q.wg.Done()
	defer close(q.syncCh)
	batch := make([]*op, 0, q.tune.maxBatchOps)
	gather := func() {
		size := int64(0)
		for _, o := range batch {
			size += o.estimate()
		}
		for len(batch) < q.tune.maxBatchOps && size < q.tune.maxBatchBytes {
			select {
			case o := <-q.ops:
				batch = append(batch, o)
				size += o.estimate()
			default:
				return
			}
		}
	}
	for {
		select {
		case o := <-q.ops:
			batch = append(batch[:0], o)
			gather()
			q.commit(batch)
		case <-q.closing:
			for {
				batch = batch[:0]
				gather()
				if len(batch) == 0 {
					return
				}
				q.commit(batch)
			}
		}
	}
}

// stage is the writes of one op, checked to fit before they enter the
// transaction so that a failing op never leaves half its writes there.
type stage struct {
	sets  []*badger.Entry
	dels  [][]byte
	recs  []stagedRec // records to append to their partition's segment
	size  int64       // as Badger estimates it
	count int64
	vlog  bool // a value goes to the value log
}

// stagedRec is a record an Append stages into its partition's segment.
type stagedRec struct {
	p     int
	seq   uint64
	value []byte
	loc   *recLoc
}

func (s *stage) set(threshold int64, k, v []byte, ttl time.Duration) {
	e := badger.NewEntry(k, v)
	if ttl > 0 {
		e = e.WithTTL(ttl)
	}
	s.sets = append(s.sets, e)
	s.size += entrySize(threshold, k, v)
	s.vlog = s.vlog || int64(len(v)) >= threshold
	s.count++
}

func (s *stage) del(k []byte) {
	s.dels = append(s.dels, k)
	s.size += entrySize(0, k, nil)
	s.count++
}

// entrySize mirrors Badger's estimate of an entry in a transaction.
func entrySize(threshold int64, k, v []byte) int64 {
	if int64(len(v)) < threshold || threshold == 0 {
		return int64(len(k)+len(v)) + 2 + 10
	}
	return int64(len(k)) + 12 + 2 + 10
}

// txBatch is one Badger transaction of a batch, with scratch copies of the
// state it changes. Most batches are one transaction; a batch too big for one
// transaction is split.
type txBatch struct {
	txn         *badger.Txn
	size, count int64
	parts       map[int]*partState
	total       int64
	quarantined int64
	globalDirty bool
	ops         []*op
	appended    map[int]uint64 // partitions appended to (or replayed into): highest Seq
	freed       bool
	drained     bool
	durable     bool // holds changes that must be synced
	vlog        bool // wrote a value over the value threshold

	outcomeBytes int64               // scratch copy of queue.outcomeBytes
	segs         map[segID]*segState // scratch copies of the finished sets touched
	pend         map[int]*pendSeg    // records appended, by partition: one segment each
	fresh        map[segID]bool      // segments whose state was created by this transaction (no finished-set entry yet)
}

// segID names a segment: partition and first Seq.
type segID struct {
	p     int
	first uint64
}

// pendSeg is the segment a transaction writes for one partition.
type pendSeg struct {
	first uint64
	vals  [][]byte
	locs  []*recLoc // where to note each record's location once known
}

func (q *queue) newTxBatch() *txBatch {
	q.mu.Lock()
	total, quarantined, ob := q.totalBytes, q.quarantined, q.outcomeBytes
	q.mu.Unlock()
	return &txBatch{
		txn:          q.db.NewTransaction(true),
		parts:        map[int]*partState{},
		total:        total,
		quarantined:  quarantined,
		outcomeBytes: ob,
		appended:     map[int]uint64{},
		segs:         map[segID]*segState{},
		pend:         map[int]*pendSeg{},
		fresh:        map[segID]bool{},
	}
}

// segState returns the scratch finished set of segment (p, first), or nil
// if the segment has none yet (no record of it is final).
func (s *txBatch) segState(q *queue, id segID) *segState {
	if st, ok := s.segs[id]; ok {
		return st
	}
	q.mu.Lock()
	st := q.open[id.p][id.first]
	q.mu.Unlock()
	if st == nil {
		return nil
	}
	st = st.clone()
	s.segs[id] = st
	return st
}

// part returns the scratch copy of partition p's state.
func (s *txBatch) part(q *queue, p int) *partState {
	if st, ok := s.parts[p]; ok {
		return st
	}
	q.mu.Lock()
	st := q.parts[p]
	q.mu.Unlock()
	s.parts[p] = &st
	return &st
}

// fits tells whether st can join the transaction's transaction, keeping room
// for the counters written at commit (one per partition in s.parts, plus
// slack for the partitions an op registers only when applied).
func (q *queue) fits(s *txBatch, st *stage) bool {
	metas := int64(len(s.parts) + 2*len(s.segs) + len(s.pend) + 4)
	limSize := q.db.MaxBatchSize() * 9 / 10
	limCount := q.db.MaxBatchCount() * 9 / 10
	return s.size+st.size+64*metas < limSize && s.count+st.count+metas < limCount
}

func (s *txBatch) add(st *stage) error {
	s.vlog = s.vlog || st.vlog
	for _, r := range st.recs {
		ps := s.pend[r.p]
		if ps == nil {
			ps = &pendSeg{first: r.seq}
			s.pend[r.p] = ps
		}
		ps.vals = append(ps.vals, r.value)
		ps.locs = append(ps.locs, r.loc)
	}
	for _, e := range st.sets {
		if err := s.txn.SetEntry(e); err != nil {
			return err
		}
	}
	for _, k := range st.dels {
		if err := s.txn.Delete(k); err != nil {
			return err
		}
	}
	s.size += st.size
	s.count += st.count
	return nil
}

// flight is a committed batch on its way to its callers: through the
// syncer when it must be synced first.
type flight struct {
	ops      []*op
	done     []*txBatch // committed transactions
	failed   error      // first commit failure, if any
	needSync bool
	vlog     bool // wrote a value to the value log (over the value threshold)
}

// commit runs one batch of ops. Batches that need no sync are released at
// once; the others are handed to the syncer, which syncs while the
// committer commits the next batch.
func (q *queue) commit(batch []*op) {
	var (
		work    = make([]*op, 0, len(batch))
		reclaim []*op
	)
	for _, o := range batch {
		if o.kind == opReclaim {
			reclaim = append(reclaim, o)
		} else {
			work = append(work, o)
		}
	}
	if len(work) > 0 {
		q.commitWork(work)
	}
	for _, o := range reclaim {
		o.err = q.failed()
		if o.err == nil {
			o.err = q.reclaimNow(o.parts)
		}
		close(o.done)
	}
}

// commitWork writes a batch of ops (no reclaims).
func (q *queue) commitWork(batch []*op) {
	f := &flight{ops: batch}
	q.checkFree()
	if err := q.failed(); err != nil {
		for _, o := range batch {
			o.err = err
		}
		f.failed = err
		q.release(f, nil)
		return
	}
	seg := q.newTxBatch()
	for _, o := range batch {
		st, apply, err := q.plan(o, seg)
		if err == nil && !q.fits(seg, st) && len(seg.ops) > 0 {
			if cerr := q.commitTx(seg); cerr != nil {
				f.failed = cmp.Or(f.failed, cerr)
			} else {
				f.done = append(f.done, seg)
			}
			seg = q.newTxBatch()
			st, apply, err = q.plan(o, seg)
		}
		if err == nil && !q.fits(seg, st) {
			err = fmt.Errorf("buffer: operation too large for one write (%d bytes estimated, limit %d)", st.size, q.db.MaxBatchSize()*9/10)
		}
		if err != nil {
			o.err = err
			continue
		}
		if err := seg.add(st); err != nil {
			// The transaction may hold part of this op: drop the transaction.
			err = fmt.Errorf("buffer: stage write: %w", err)
			o.err = err
			for _, so := range seg.ops {
				so.err = err
			}
			seg.txn.Discard()
			f.failed = cmp.Or(f.failed, err)
			seg = q.newTxBatch()
			continue
		}
		apply()
		seg.ops = append(seg.ops, o)
	}
	if len(seg.ops) > 0 {
		if err := q.commitTx(seg); err != nil {
			f.failed = cmp.Or(f.failed, err)
		} else {
			f.done = append(f.done, seg)
		}
	} else {
		seg.txn.Discard()
	}
	for _, s := range f.done {
		f.needSync = f.needSync || (s.durable && q.fsync)
		f.vlog = f.vlog || s.vlog
		if s.freed {
			signal(q.freed)
		}
		if s.drained {
			signal(q.gcKick)
		}
		if s.outcomeBytes > q.opts.OutcomeMaxBytes {
			signal(q.trimKick)
		}
	}
	if f.needSync {
		q.syncCh <- f // blocks only if 1024 flights wait for the syncer
		return
	}
	q.release(f, nil)
}

// syncLoop is the syncer goroutine. Each DB.Sync covers every flight
// committed before it started: while one sync runs, the committer goes on
// committing, and the next sync takes all of those at once. It stops when
// the committer closes syncCh.
func (q *queue) syncLoop() {
	defer q.wg.Done()
	defer close(q.stopped)
	defer q.wal.close()
	var flights []*flight
	for f := range q.syncCh {
		flights = append(flights[:0], f)
		open := true
	more:
		for {
			select {
			case g, ok := <-q.syncCh:
				if !ok {
					open = false
					break more
				}
				flights = append(flights, g)
			default:
				break more
			}
		}
		var vlog bool
		for _, g := range flights {
			vlog = vlog || g.vlog
		}
		err := q.failed()
		if err == nil && q.tune.beforeSync != nil {
			err = q.tune.beforeSync(q)
		}
		if err == nil {
			err = q.syncFlights(vlog)
		}
		if err != nil {
			err = q.fail(err)
		}
		for _, g := range flights {
			q.release(g, err)
		}
		if !open {
			return
		}
	}
}

// fail stops the queue after a failed sync (see ErrSyncFailed) and returns
// the error every later operation gets: the first failure, kept for good.
func (q *queue) fail(err error) error {
	if errors.Is(err, ErrSyncFailed) {
		return err
	}
	stop := fmt.Errorf("%w: %w", ErrSyncFailed, err)
	if q.failure.CompareAndSwap(nil, &stop) {
		q.log.Error("buffer: sync failed; the queue takes nothing more until the edge restarts", "err", err)
	}
	return *q.failure.Load()
}

// failed is the error of the failed sync that stopped the queue, nil while
// none has.
func (q *queue) failed() error {
	if p := q.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// syncFlights makes what was committed so far durable, as tuning.sync says.
func (q *queue) syncFlights(vlog bool) error {
	var err error
	switch q.tune.sync {
	case syncWAL:
		err = q.wal.sync()
		if err == nil && vlog {
			err = q.db.Sync()
		}
	case syncDB:
		err = q.db.Sync()
	case syncWrites:
	}
	if err != nil {
		return fmt.Errorf("buffer: sync: %w", err)
	}
	return nil
}

// release ends a flight: a sync error fails every op whose writes it
// covered (they are in Badger but maybe not on disk, so no caller may take
// them as stored); otherwise the durable marks advance and the tail takes
// the records. Callers are released and readers notified.
func (q *queue) release(f *flight, syncErr error) {
	if syncErr != nil {
		for _, s := range f.done {
			for _, o := range s.ops {
				o.err = syncErr
			}
		}
	}
	failed := cmp.Or(f.failed, syncErr)
	if len(f.done) > 0 || failed != nil {
		q.mu.Lock()
		q.lastErr = failed
		q.mu.Unlock()
	}
	if failed != nil && !errors.Is(failed, ErrSyncFailed) { // fail logged that once
		q.log.Error("buffer: write failed", "err", failed, "ops", len(f.ops))
	}
	if syncErr == nil {
		// Only a sync that succeeded makes records readable: those of a
		// failed one are in Badger's memory but maybe not on disk, and
		// their callers were told they were not stored.
		q.publishTail(f)
		for _, s := range f.done {
			for p, seq := range s.appended {
				if seq > q.durable[p].Load() {
					q.durable[p].Store(seq)
				}
			}
		}
	}
	for _, o := range f.ops {
		close(o.done)
	}
	for _, s := range f.done {
		for p := range s.appended {
			signal(q.notify[p])
		}
	}
}

// commitTx writes the transaction's segments, finished sets and counters and commits it. On success
// the scratch state becomes the queue's state.
func (q *queue) commitTx(s *txBatch) error {
	defer s.txn.Discard()
	for p, ps := range s.pend {
		v := encodeSegment(ps.vals)
		if int64(len(v)) >= q.tune.valueThreshold {
			s.vlog = true
		}
		if err := s.txn.Set(segKey(p, ps.first), v); err != nil {
			return q.failTx(s, fmt.Errorf("buffer: write segment: %w", err))
		}
		for i, l := range ps.locs {
			*l = recLoc{seg: ps.first, n: uint32(len(ps.vals)), size: int64(len(ps.vals[i]))}
		}
	}
	for id, st := range s.segs {
		var err error
		switch {
		case st.left == 0:
			err = s.txn.Delete(segKey(id.p, id.first))
			if err == nil && !s.fresh[id] {
				err = s.txn.Delete(segDoneKey(id.p, id.first))
			}
		default:
			err = s.txn.Set(segDoneKey(id.p, id.first), encodeSegState(st))
		}
		if err != nil {
			return q.failTx(s, fmt.Errorf("buffer: write finished set: %w", err))
		}
	}
	for p, st := range s.parts {
		if err := s.txn.Set(metaKey(p), encodePartMeta(st.partMeta)); err != nil {
			return q.failTx(s, fmt.Errorf("buffer: write counters: %w", err))
		}
	}
	if s.globalDirty {
		if err := s.txn.Set(globalKey, encodeGlobalMeta(globalMeta{Quarantined: s.quarantined, OutcomeBytes: s.outcomeBytes})); err != nil {
			return q.failTx(s, fmt.Errorf("buffer: write counters: %w", err))
		}
	}
	if err := s.txn.Commit(); err != nil {
		return q.failTx(s, fmt.Errorf("buffer: commit: %w", err))
	}
	q.mu.Lock()
	for p, st := range s.parts {
		st.gen = q.parts[p].gen + 1
		q.parts[p] = *st
	}
	q.totalBytes = s.total
	q.quarantined = s.quarantined
	q.outcomeBytes = s.outcomeBytes
	for id, st := range s.segs {
		if st.left == 0 {
			delete(q.open[id.p], id.first)
			q.dropSegsLocked(id.p) // deleted: its copies go
		} else {
			q.open[id.p][id.first] = st
		}
	}
	q.mu.Unlock()
	return nil
}

// failTx fails the transaction's ops. Sequence numbers stay consumed: a
// failed write may still surface after a restart, and a Seq is never given
// twice.
func (q *queue) failTx(s *txBatch, err error) error {
	for _, o := range s.ops {
		o.err = err
	}
	q.mu.Lock()
	for p, st := range s.parts {
		if st.NextSeq > q.parts[p].NextSeq {
			q.parts[p].NextSeq = st.NextSeq
		}
	}
	q.mu.Unlock()
	return err
}

// plan reads what op o needs through the transaction's transaction and returns
// its writes and the function that applies its effect to the scratch state
// (called only if the writes are taken). An error fails the op alone,
// nothing staged.
func (q *queue) plan(o *op, s *txBatch) (*stage, func(), error) {
	st := &stage{}
	var (
		apply func()
		err   error
	)
	switch o.kind {
	case opAppend:
		apply, err = q.planAppend(o, s, st)
	case opAck:
		apply, err = q.planAck(o, s, st)
	case opNack:
		apply, err = q.planNack(o, s, st)
	case opDead:
		apply, err = q.planDead(o, s, st)
	case opReplay:
		apply, err = q.planReplay(o, s, st)
	case opDiscard:
		apply, err = q.planDiscard(o, s, st)
	case opQuarantine:
		apply, err = q.planQuarantine(o, s, st)
	case opTrim:
		apply, err = q.planTrim(o, s, st)
	default:
		err = fmt.Errorf("buffer: unknown op %d", o.kind)
	}
	if err != nil {
		return nil, nil, err
	}
	return st, apply, nil
}

func getCopy(txn *badger.Txn, k []byte) ([]byte, bool, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("buffer: read %x: %w", k, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, fmt.Errorf("buffer: read %x: %w", k, err)
	}
	return v, true, nil
}

func (q *queue) planAppend(o *op, s *txBatch, st *stage) (func(), error) {
	o.results = make([]AppendResult, len(o.items))
	o.seqs = make([]uint64, len(o.items))
	o.locs = make([]recLoc, len(o.items))
	type first struct {
		id     string
		digest [digestLen]byte
	}
	var (
		local map[string]first
		add   int64
	)
	for i, it := range o.items {
		if it.scope != "" {
			f, ok := local[it.scope]
			if !ok {
				v, found, err := getCopy(s.txn, stringKey(prefixIdemScoped, it.scope))
				if err != nil {
					return nil, err
				}
				if found {
					id, digest, err := decodeIdem(v)
					if err != nil {
						return nil, fmt.Errorf("buffer: idempotency entry: %w", err)
					}
					f, ok = first{id, digest}, true
				}
			}
			if ok {
				o.results[i] = AppendResult{Duplicate: f.digest == it.digest, Conflict: f.digest != it.digest, ID: f.id}
				continue
			}
			if local == nil {
				local = map[string]first{}
			}
			local[it.scope] = first{it.id, it.digest}
		}
		o.results[i] = AppendResult{ID: it.id}
		add += int64(len(it.value))
	}
	dups := false
	for _, r := range o.results {
		dups = dups || r.Duplicate || r.Conflict
	}
	if add > 0 && s.total+add > q.opts.MaxBytes {
		return nil, ErrFull
	}
	if add > 0 && q.lowDisk {
		return nil, ErrDiskLow
	}
	next := map[int]uint64{}
	for i, it := range o.items {
		if o.results[i].Duplicate || o.results[i].Conflict {
			continue
		}
		seq, ok := next[it.p]
		if !ok {
			seq = s.part(q, it.p).NextSeq
		}
		next[it.p] = seq + 1
		o.seqs[i] = seq
		st.recs = append(st.recs, stagedRec{p: it.p, seq: seq, value: it.value, loc: &o.locs[i]})
		// As Badger counts it: a segment over the value threshold goes to
		// the value log and weighs a pointer in the transaction.
		st.size += min(int64(len(it.value)), q.tune.valueThreshold) + binary.MaxVarintLen32
		if it.scope != "" {
			st.set(q.tune.valueThreshold, stringKey(prefixIdemScoped, it.scope), encodeIdem(it.id, it.digest), q.opts.IdempotencyTTL)
		}
	}
	apply := func() {
		for i, it := range o.items {
			if o.results[i].Duplicate || o.results[i].Conflict {
				continue
			}
			ps := s.part(q, it.p)
			if ps.Records == 0 {
				ps.Head, ps.oldest, ps.headKnown = o.seqs[i], it.received, true
			}
			ps.NextSeq = o.seqs[i] + 1
			ps.Records++
			ps.Bytes += int64(len(it.value))
			ps.peak = max(ps.peak, ps.Bytes)
			s.appended[it.p] = max(s.appended[it.p], o.seqs[i])
		}
		s.total += add
		// A duplicate's answer names a record that may be committed but
		// not yet synced: it goes through the syncer too, whose next sync
		// covers that record's commit.
		if add > 0 || dups {
			s.durable = true
		}
	}
	return apply, nil
}

// recordID reads the id of a record value without decoding the rest.
func recordID(v []byte) (string, bool) {
	if len(v) < 5 || (v[0] != recordV1 && v[0] != recordV2) {
		return "", false
	}
	d := decoder{b: v[1 : len(v)-4]}
	d.bytes("mutable section")
	id := d.bytes("id")
	if d.err != nil {
		return "", false
	}
	return string(id), true
}

// located is a queued record found by locate.
type located struct {
	single bool   // stored on its own (q key)
	seg    segID  // its segment, when !single
	index  int    // its index in the segment
	n      int    // records in the segment
	value  []byte // its stored value, when read (singles always; segments when want)
}

// locate finds the queued record (p, seq) with id: through the finished set
// in memory when its segment has one (no read), else by reading. want asks
// for the record's value. ErrNotFound if it is not queued.
func (q *queue) locate(s *txBatch, p int, seq uint64, id string, loc recLoc, want bool) (*located, error) {
	if p < 0 || p >= len(q.parts) || seq == 0 {
		return nil, ErrNotFound
	}
	if loc.seg != 0 && loc.seg <= seq && seq-loc.seg < uint64(loc.n) {
		sid := segID{p, loc.seg}
		if st := s.segState(q, sid); st != nil && !want {
			i := int(seq - loc.seg)
			if st.isDone(i) || st.n != int(loc.n) {
				return nil, ErrNotFound
			}
			return &located{seg: sid, index: i, n: st.n}, nil
		}
		return q.readSegRec(s, sid, seq, id)
	}
	v, found, err := getCopy(s.txn, seqKey(prefixQueue, p, seq))
	if err != nil {
		return nil, err
	}
	if found {
		if got, ok := recordID(v); !ok || got != id {
			return nil, ErrNotFound
		}
		return &located{single: true, value: v}, nil
	}
	// The segment holding seq starts at or before it.
	it := s.txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefixSeg, p), Reverse: true})
	it.Seek(segKey(p, seq))
	var first uint64
	if it.Valid() {
		_, _, first, _ = parseSeqKey(it.Item().Key())
	}
	it.Close()
	if first == 0 {
		return nil, ErrNotFound
	}
	return q.readSegRec(s, segID{p, first}, seq, id)
}

// readSegRec reads record seq of segment sid and checks it is id's and not
// final.
func (q *queue) readSegRec(s *txBatch, sid segID, seq uint64, id string) (*located, error) {
	v, found, err := getCopy(s.txn, segKey(sid.p, sid.first))
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	n, recs, _, _ := parseSegment(v)
	i := int(seq - sid.first)
	if seq < sid.first || i >= n || i >= len(recs) || recs[i] == nil {
		return nil, ErrNotFound
	}
	if st := s.segState(q, sid); st != nil && st.isDone(i) {
		return nil, ErrNotFound
	}
	if got, ok := recordID(recs[i]); !ok || got != id {
		return nil, ErrNotFound
	}
	return &located{seg: sid, index: i, n: n, value: recs[i]}, nil
}

// finish marks a located segment record final in the transaction's scratch
// state. The caller has checked it is not final yet.
func (s *txBatch) finish(q *queue, l *located) {
	st := s.segState(q, l.seg)
	if st == nil {
		st = newSegState(l.n)
		s.segs[l.seg] = st
		s.fresh[l.seg] = true
	}
	st.finish(l.index)
}

// retryOf reads the retry state of (p, seq), nil if none.
func retryOf(s *txBatch, p int, seq uint64) ([]byte, error) {
	v, _, err := getCopy(s.txn, retryKey(p, seq))
	return v, err
}

// removed updates ps for the removal of a queued record of size n at seq.
func (s *txBatch) removed(ps *partState, seq uint64, n int64) {
	ps.Records--
	ps.Bytes -= n
	s.total -= n
	s.freed = true
	switch {
	case ps.Records <= 0:
		ps.Records, ps.Bytes = 0, 0
		ps.Head, ps.oldest, ps.headKnown = ps.NextSeq, time.Time{}, true
		s.drained = true
	case seq == ps.Head:
		ps.Head, ps.headKnown = seq+1, false
	}
}

func (q *queue) planAck(o *op, s *txBatch, st *stage) (func(), error) {
	l, err := q.locate(s, o.p, o.seq, o.id, o.loc, false)
	if err != nil {
		return nil, err
	}
	size := o.loc.size
	if l.value != nil {
		size = int64(len(l.value))
	}
	if l.single {
		st.del(seqKey(prefixQueue, o.p, o.seq))
		st.del(stringKey(prefixIndex, o.id))
	} else if o.retried {
		st.del(retryKey(o.p, o.seq))
	}
	if o.outcome != nil {
		st.set(q.tune.valueThreshold, stringKey(prefixOutcome, o.id), o.outcome, 0)
	}
	if o.forget != "" {
		st.del(stringKey(prefixIdemScoped, o.forget))
	}
	return func() {
		if !l.single {
			s.finish(q, l)
		}
		s.removed(s.part(q, o.p), o.seq, size)
		if o.outcome != nil {
			s.outcomeBytes += int64(len(o.outcome))
			s.globalDirty = true
		}
		if o.mustSync {
			s.durable = true
		}
	}, nil
}

func (q *queue) planNack(o *op, s *txBatch, st *stage) (func(), error) {
	l, err := q.locate(s, o.p, o.seq, o.id, o.loc, false)
	if err != nil {
		return nil, err
	}
	if l.single {
		nv, err := withMutable(l.value, o.attempts, o.next, o.lastErr)
		if err != nil {
			return nil, fmt.Errorf("buffer: nack %s: %w", o.id, err)
		}
		st.set(q.tune.valueThreshold, seqKey(prefixQueue, o.p, o.seq), nv, 0)
		return func() {
			d := int64(len(nv) - len(l.value))
			s.part(q, o.p).Bytes += d
			s.total += d
		}, nil
	}
	st.set(q.tune.valueThreshold, retryKey(o.p, o.seq), encodeRetry(o.attempts, unixNano(o.next), o.lastErr), 0)
	return func() {}, nil
}

func (q *queue) planDead(o *op, s *txBatch, st *stage) (func(), error) {
	l, err := q.locate(s, o.p, o.seq, o.id, o.loc, true)
	if err != nil {
		return nil, err
	}
	v := l.value
	if !l.single {
		// The stored value has the state of its append; the dead letter
		// keeps the caller's (attempts, last error).
		if v, err = withMutable(v, o.attempts, o.next, o.lastErr); err != nil {
			return nil, fmt.Errorf("buffer: dead letter %s: %w", o.id, err)
		}
	}
	rec, err := decodeRecord(v, o.p, o.seq, false)
	if err != nil {
		return nil, fmt.Errorf("buffer: dead letter %s: %w", o.id, err)
	}
	if l.single {
		st.del(seqKey(prefixQueue, o.p, o.seq))
	} else {
		st.del(retryKey(o.p, o.seq))
	}
	st.set(q.tune.valueThreshold, seqKey(prefixDead, o.p, o.seq), encodeDead(v, o.outcome), 0)
	st.set(q.tune.valueThreshold, stringKey(prefixIndex, o.id), encodeIndex(indexDead, o.p, o.seq), 0)
	if o.park {
		pk := parkedKey(o.p, rec.Key)
		_, parked, err := getCopy(s.txn, pk)
		if err != nil {
			return nil, err
		}
		if !parked {
			st.set(q.tune.valueThreshold, pk, []byte(o.id), 0)
		}
	}
	return func() {
		ps := s.part(q, o.p)
		if !l.single {
			s.finish(q, l)
		}
		s.removed(ps, o.seq, int64(len(l.value)))
		ps.Dead++
		s.durable = true
	}, nil
}

// deadOf finds dead letter id: its partition, seq and value.
func (q *queue) deadOf(s *txBatch, id string) (int, uint64, []byte, error) {
	iv, found, err := getCopy(s.txn, stringKey(prefixIndex, id))
	if err != nil {
		return 0, 0, nil, err
	}
	if !found {
		return 0, 0, nil, ErrNotFound
	}
	state, p, seq, err := decodeIndex(iv)
	if err != nil || state != indexDead || p >= len(q.parts) {
		return 0, 0, nil, ErrNotFound
	}
	v, found, err := getCopy(s.txn, seqKey(prefixDead, p, seq))
	if err != nil {
		return 0, 0, nil, err
	}
	if !found {
		return 0, 0, nil, ErrNotFound
	}
	return p, seq, v, nil
}

// liftPark stages the removal of key's park if dead letter id holds it.
func (q *queue) liftPark(s *txBatch, st *stage, p int, key, id string) error {
	pk := parkedKey(p, key)
	v, found, err := getCopy(s.txn, pk)
	if err != nil {
		return err
	}
	if found && string(v) == id {
		st.del(pk)
	}
	return nil
}

func (q *queue) planReplay(o *op, s *txBatch, st *stage) (func(), error) {
	p, seq, v, err := q.deadOf(s, o.id)
	if err != nil {
		return nil, err
	}
	rv, _, err := splitDead(v)
	if err != nil {
		return nil, fmt.Errorf("buffer: replay %s: %w", o.id, err)
	}
	nv, err := withMutable(rv, 0, time.Time{}, "")
	if err != nil {
		return nil, fmt.Errorf("buffer: replay %s: %w", o.id, err)
	}
	rec, err := decodeRecord(nv, p, seq, true)
	if err != nil {
		return nil, fmt.Errorf("buffer: replay %s: %w", o.id, err)
	}
	st.set(q.tune.valueThreshold, seqKey(prefixQueue, p, seq), nv, 0)
	st.del(seqKey(prefixDead, p, seq))
	st.set(q.tune.valueThreshold, stringKey(prefixIndex, o.id), encodeIndex(indexQueued, p, seq), 0)
	if err := q.liftPark(s, st, p, rec.Key, o.id); err != nil {
		return nil, err
	}
	return func() {
		ps := s.part(q, p)
		if ps.Records == 0 || seq <= ps.Head {
			ps.Head, ps.oldest, ps.headKnown = seq, rec.ReceivedAt, true
		}
		ps.Records++
		ps.Bytes += int64(len(nv))
		s.total += int64(len(nv))
		ps.Dead = max(ps.Dead-1, 0)
		s.appended[p] = max(s.appended[p], seq)
		s.durable = true
		o.replayed = rec
	}, nil
}

func (q *queue) planDiscard(o *op, s *txBatch, st *stage) (func(), error) {
	p, seq, v, err := q.deadOf(s, o.id)
	if err != nil {
		return nil, err
	}
	st.del(seqKey(prefixDead, p, seq))
	st.del(stringKey(prefixIndex, o.id))
	var ov []byte
	if rec, out, err := decodeDead(v, p, seq, false); err == nil {
		if err := q.liftPark(s, st, p, rec.Key, o.id); err != nil {
			return nil, err
		}
		// Keep what happened for Lookup (and Idempotency-Key repeats).
		out.Status = StatusDead
		if out.LastError == "" {
			out.LastError = "discarded"
		} else {
			out.LastError += "; discarded"
		}
		ov = encodeOutcome(out, q.opts.MaxOutcomeBody)
		st.set(q.tune.valueThreshold, stringKey(prefixOutcome, o.id), ov, 0)
	}
	return func() {
		ps := s.part(q, p)
		ps.Dead = max(ps.Dead-1, 0)
		s.durable = true
		if ov != nil {
			s.outcomeBytes += int64(len(ov))
			s.globalDirty = true
		}
	}, nil
}

func (q *queue) planQuarantine(o *op, s *txBatch, st *stage) (func(), error) {
	type moved struct {
		prefix byte
		p      int
		seq    uint64
		ok     bool
		n      int64
		segs   []*located // segment records set aside (marked final)
	}
	var (
		ms []moved
	)
	for _, c := range o.corrupt {
		if c.seg != 0 {
			// Records of a segment: the segment stays, the records are
			// marked final and their bytes kept aside.
			sid := segID{c.p, c.seg}
			v, found, err := getCopy(s.txn, segKey(c.p, c.seg))
			if err != nil {
				return nil, err
			}
			if !found || c.p >= len(q.parts) {
				continue
			}
			n, _, _, _ := parseSegment(v)
			if n == 0 {
				n = 1 // no readable count: the whole value is one record
			}
			stt := s.segState(q, sid)
			var ls []*located
			for i := c.index; i < c.index+max(c.span, 1) && i < n; i++ {
				if stt != nil && stt.isDone(i) {
					continue
				}
				ls = append(ls, &located{seg: sid, index: i, n: n})
			}
			if len(ls) == 0 {
				continue
			}
			qk := binary.BigEndian.AppendUint32(quarantineKey(segKey(c.p, c.seg)), uint32(c.index))
			st.set(q.tune.valueThreshold, qk, c.value, 0)
			ms = append(ms, moved{prefix: prefixSeg, p: c.p, seq: c.seg + uint64(c.index), ok: true, n: int64(len(c.value)), segs: ls})
			continue
		}
		v, found, err := getCopy(s.txn, c.key)
		if err != nil {
			return nil, err
		}
		if !found || !bytes.Equal(v, c.value) {
			continue // gone or rewritten since it was read
		}
		st.set(q.tune.valueThreshold, quarantineKey(c.key), v, 0)
		st.del(c.key)
		prefix, p, seq, ok := parseSeqKey(c.key)
		ok = ok && p < len(q.parts)
		ms = append(ms, moved{prefix: prefix, p: p, seq: seq, ok: ok, n: int64(len(v))})
	}
	return func() {
		for _, m := range ms {
			s.quarantined++
			s.globalDirty = true
			if !m.ok {
				continue
			}
			ps := s.part(q, m.p)
			switch m.prefix {
			case prefixQueue:
				s.removed(ps, m.seq, m.n)
			case prefixSeg:
				for k, l := range m.segs {
					s.finish(q, l)
					n := int64(0)
					if k == 0 {
						n = m.n
					}
					s.removed(ps, l.seg.first+uint64(l.index), n)
				}
			case prefixDead:
				ps.Dead = max(ps.Dead-1, 0)
			}
		}
		s.durable = len(ms) > 0
	}, nil
}

// Limits of the fields that become part of a key.
const (
	maxIDLen   = 256
	maxKeyLen  = 4096
	maxIdemLen = 4096
)

// Append implements Queue. Records are encoded in the caller's goroutine;
// on success each record's Seq is set. If ctx ends before the write is
// done, Append returns ctx's error and the records may or may not be
// stored.
func (q *queue) Append(ctx context.Context, recs []*Record) ([]AppendResult, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	o := &op{kind: opAppend, items: make([]appendItem, len(recs))}
	for i, r := range recs {
		if r == nil {
			return nil, errors.New("buffer: append: nil record")
		}
		if err := q.checkPartition(r.Partition); err != nil {
			return nil, fmt.Errorf("buffer: append %s: %w", r.ID, err)
		}
		switch {
		case r.ID == "" || len(r.ID) > maxIDLen:
			return nil, fmt.Errorf("buffer: append: id %q: empty or longer than %d bytes", r.ID, maxIDLen)
		case len(r.Key) > maxKeyLen:
			return nil, fmt.Errorf("buffer: append %s: key longer than %d bytes", r.ID, maxKeyLen)
		case len(r.IdempotencyKey) > maxIdemLen:
			return nil, fmt.Errorf("buffer: append %s: idempotency key longer than %d bytes", r.ID, maxIdemLen)
		case len(r.IdempotencyScope) > maxIdemLen:
			return nil, fmt.Errorf("buffer: append %s: idempotency scope longer than %d bytes", r.ID, maxIdemLen)
		}
		if r.ReceivedAt.IsZero() {
			r.ReceivedAt = time.Now()
		}
		v := encodeRecord(r)
		if len(v) > MaxRecordBytes {
			return nil, fmt.Errorf("buffer: append %s: record of %d bytes exceeds %d", r.ID, len(v), MaxRecordBytes)
		}
		o.items[i] = appendItem{p: r.Partition, id: r.ID, scope: r.IdempotencyScope, value: v, received: r.ReceivedAt, rec: r}
		if r.IdempotencyScope != "" {
			o.items[i].digest = requestDigest(r)
		}
	}
	if err := q.submit(ctx, o); err != nil {
		return nil, err
	}
	if o.err != nil {
		return nil, o.err
	}
	for i, r := range recs {
		if !o.results[i].Duplicate && !o.results[i].Conflict {
			r.Seq = o.seqs[i]
			r.loc = o.locs[i]
		}
	}
	return o.results, nil
}

// Nack implements Queue. ErrNotFound if rec is no longer queued.
func (q *queue) Nack(ctx context.Context, rec *Record) error {
	if rec == nil {
		return errors.New("buffer: nack: nil record")
	}
	o := &op{kind: opNack, p: rec.Partition, seq: rec.Seq, id: rec.ID, loc: rec.loc,
		attempts: rec.Attempts, next: rec.NextAttemptAt, lastErr: rec.LastError}
	return q.run(ctx, o, "nack "+rec.ID)
}

// Ack implements Queue. ErrNotFound if rec is no longer queued (already
// acknowledged or dead-lettered). The outcome is kept whole for a record
// with an IdempotencyScope (a repeat is answered from it) and for a
// rejection; a delivered record without one keeps its status line only
// (no headers, no body).
func (q *queue) Ack(ctx context.Context, rec *Record, out Outcome) error {
	if rec == nil {
		return errors.New("buffer: ack: nil record")
	}
	fillOutcome(&out, rec)
	if out.Status == StatusDelivered && rec.IdempotencyScope == "" {
		out.ResponseHeader, out.ResponseBody = nil, nil
	}
	o := &op{kind: opAck, p: rec.Partition, seq: rec.Seq, id: rec.ID, loc: rec.loc, retried: rec.Attempts > 0,
		outcome: encodeOutcome(&out, q.opts.MaxOutcomeBody)}
	if out.Status == StatusRejected && out.ResponseStatus == http.StatusTooManyRequests {
		// A throttled request was applied by nobody and its client is
		// told so: a retry with the same Idempotency-Key must be a new
		// request, not a replay of the 429 for the key's whole TTL. The
		// drop is synced before Ack returns: lost in a power cut, the
		// record would come back and be delivered though its client was
		// told it was not.
		o.forget = rec.IdempotencyScope
		o.mustSync = true
	}
	return q.run(ctx, o, "ack "+rec.ID)
}

// DeadLetter implements Queue. ErrNotFound if rec is no longer queued.
func (q *queue) DeadLetter(ctx context.Context, rec *Record, out Outcome, park bool) error {
	if rec == nil {
		return errors.New("buffer: dead letter: nil record")
	}
	fillOutcome(&out, rec)
	out.Status = StatusDead
	o := &op{kind: opDead, p: rec.Partition, seq: rec.Seq, id: rec.ID, park: park, loc: rec.loc,
		attempts: rec.Attempts, next: rec.NextAttemptAt, lastErr: rec.LastError,
		outcome: encodeOutcome(&out, q.opts.MaxOutcomeBody)}
	return q.run(ctx, o, "dead letter "+rec.ID)
}

// fillOutcome completes the outcome's identity fields from the record.
func fillOutcome(out *Outcome, rec *Record) {
	out.ID = rec.ID
	out.Partition = rec.Partition
	out.Key = rec.Key
	out.scope = rec.IdempotencyScope
	if out.ReceivedAt.IsZero() {
		out.ReceivedAt = rec.ReceivedAt
	}
	if out.FinishedAt.IsZero() {
		out.FinishedAt = time.Now()
	}
	if out.Attempts == 0 {
		out.Attempts = rec.Attempts
	}
}

// Replay implements Queue.
func (q *queue) Replay(ctx context.Context, id string) (*Record, error) {
	o := &op{kind: opReplay, id: id}
	if err := q.run(ctx, o, "replay "+id); err != nil {
		return nil, err
	}
	return o.replayed, nil
}

// Discard implements Queue. The dead outcome is kept for OutcomeTTL, so
// Lookup still answers "dead" for id.
func (q *queue) Discard(ctx context.Context, id string) error {
	return q.run(ctx, &op{kind: opDiscard, id: id}, "discard "+id)
}

// run submits o and returns its error, wrapped with what unless it is one
// of the package's sentinels.
func (q *queue) run(ctx context.Context, o *op, what string) error {
	if err := q.submit(ctx, o); err != nil {
		return err
	}
	switch {
	case o.err == nil:
		return nil
	case errors.Is(o.err, ErrNotFound), errors.Is(o.err, ErrClosed):
		return fmt.Errorf("buffer: %s: %w", what, o.err)
	default:
		return o.err
	}
}
