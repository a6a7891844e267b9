package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Disk reclaim.
//
// An acknowledged record leaves a tombstone; Badger drops the record's bytes
// only when a compaction brings the two together, and the bottom level is
// compacted only when the level above outgrows it. After a large backlog
// drains, hundreds of MiB of dead records can therefore stay on disk
// indefinitely, and the tombstones of the last few seconds sit in the
// memtable where no compaction sees them. Value-log GC alone does not help:
// it acts on discard statistics that those same compactions produce.
//
// So the GC goroutine also reclaims: when a partition that held a backlog of
// at least tuning.reclaimMin bytes since its last reclaim is empty again,
// the committer (the only writer, so nothing races it) drops the
// partition's queue prefix with DB.DropPrefix, which flushes the memtables
// and rewrites the tables without those keys. Writes wait meanwhile
// (measured: ~0.1–0.3 s after draining 200k records, ~0.5–1 s after 1M).
// In the steady state, where records are acknowledged soon after they are
// appended, no backlog builds up and ordinary compactions keep up: no
// reclaim runs. Value-log GC (for values over the value threshold) runs
// after every check.
//
// Records that stay queued for minutes (a slow or down backend, a queue
// held full at MaxBytes) reach Badger's last level before their
// tombstones do. Tombstones are small, so the levels above rarely outgrow
// their targets and push them down, and the deleted records stay on disk:
// measured with a full 64 MiB queue and 16 MiB of outcomes, the directory
// grew past 240 MiB in 30 minutes and was still growing. So when the
// directory passes MaxBytes + OutcomeMaxBytes + DiskOverhead/4, the GC
// goroutine has Badger flatten the tree (DB.Flatten: every level compacted
// into the last, so each tombstone meets what it deletes and both go), at
// most once per tuning.compactInterval and only after the directory grew by
// DiskOverhead/4 since the last flatten. Writes go on meanwhile (measured:
// 0.5–0.9 s for a 100 MiB tree, back to the live data plus ~10 MiB).

// gcDiscardRatio is the share of a value-log file that must be garbage for
// GC to rewrite it.
const gcDiscardRatio = 0.5

// gcLoop is the queue's GC goroutine: every tuning.gcInterval, and
// tuning.gcDrainDelay after the queue became empty, it reclaims the queue
// prefixes of empty partitions (rate-limited by tuning.reclaimInterval) and
// runs value-log GC until there is nothing left to rewrite.
func (q *queue) gcLoop(ctx context.Context) {
	defer q.wg.Done()
	tick := time.NewTicker(q.tune.gcInterval)
	defer tick.Stop()
	drain := time.NewTimer(time.Hour)
	drain.Stop()
	defer drain.Stop()
	last := make([]time.Time, len(q.parts)) // last reclaim of each partition
	var compacted compactState
	budget := time.NewTicker(q.tune.budgetInterval)
	defer budget.Stop()
	level := 0 // disk use band last logged: 0 below 80%, 1 from 80%, 2 from 100%
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.trimKick:
			if _, err := q.trimOutcomes(ctx); err != nil && ctx.Err() == nil {
				q.log.Warn("buffer: dropping old outcomes failed", "err", err)
			}
			continue
		case <-budget.C:
			if _, err := q.trimOutcomes(ctx); err != nil && ctx.Err() == nil {
				q.log.Warn("buffer: dropping old outcomes failed", "err", err)
			}
			level = q.checkBudget(level)
			q.compactIfNear(&compacted)
			continue
		case <-q.gcKick:
			// Let the drain settle (the last acks) before looking.
			drain.Reset(q.tune.gcDrainDelay)
			continue
		case <-drain.C:
		case <-tick.C:
		}
		if err := q.reclaim(ctx, last); err != nil {
			q.log.Warn("buffer: reclaim failed", "err", err)
		}
		q.collect(ctx)
	}
}

// compactIfNear flattens the LSM tree when the directory has passed
// MaxBytes + OutcomeMaxBytes + DiskOverhead/4 (the rest of DiskOverhead
// holds what piles up while a flatten runs: the memtables and level-0
// tables up to Badger's write stall), has grown by DiskOverhead/4 since the
// last flatten left it (or since its lowest size after that), and that
// flatten is at least tuning.compactInterval ago (c: the state kept between
// calls). The growth condition keeps a directory that is near the budget
// because of live data (a full queue) from being rewritten again and again
// for nothing. It runs in the GC goroutine, which also runs reclaim's
// DropPrefix: the two never overlap.
func (q *queue) compactIfNear(c *compactState) {
	size := q.disk.size(q.opts.Path)
	c.after = min(c.after, size) // a reclaim or a trim may have shrunk it since
	if size <= q.diskBudget()-q.tune.diskOverhead*3/4 || size <= c.after+q.tune.diskOverhead/4 ||
		(!c.at.IsZero() && time.Since(c.at) < q.tune.compactInterval) {
		return
	}
	start := time.Now()
	err := q.db.Flatten(1)
	c.at, c.after = time.Now(), dirSize(q.opts.Path)
	// The gauge's cached size predates the flatten; left alone, the next
	// call would compare that stale, larger size with c.after and flatten
	// again at once when compactInterval is shorter than diskGaugeEvery.
	q.disk.set(c.after)
	q.compactions.Add(1)
	if err != nil {
		q.log.Warn("buffer: compaction to reclaim deleted records failed", "err", err)
		return
	}
	q.log.Info("buffer: compacted the store to reclaim deleted records", "disk_bytes_before", size,
		"disk_bytes_after", c.after, "took", time.Since(start))
}

// compactState is what compactIfNear remembers of its last flatten.
type compactState struct {
	at    time.Time // when it ended
	after int64     // the directory's size then, or its lowest since
}

// reclaim asks the committer to drop the queue prefixes of the empty
// partitions that held at least tuning.reclaimMin bytes since their last
// reclaim, at most once per tuning.reclaimInterval each (last, updated).
func (q *queue) reclaim(ctx context.Context, last []time.Time) error {
	var empty []int
	q.mu.Lock()
	for p := range q.parts {
		st := &q.parts[p]
		if st.Records == 0 && st.peak >= q.tune.reclaimMin &&
			(last[p].IsZero() || time.Since(last[p]) >= q.tune.reclaimInterval) {
			empty = append(empty, p)
		}
	}
	q.mu.Unlock()
	if len(empty) == 0 {
		return nil
	}
	var (
		cands []int
		size  int64
	)
	tables := q.db.Tables()
	for _, p := range empty {
		if n := tableBytes(tables, partPrefix(prefixQueue, p)) + tableBytes(tables, partPrefix(prefixSeg, p)); n > 0 {
			size += n
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	start := time.Now()
	o := &op{kind: opReclaim, parts: cands}
	if err := q.submit(ctx, o); err != nil {
		return err
	}
	if o.err != nil {
		return o.err
	}
	for _, p := range cands {
		last[p] = start
	}
	q.log.Info("buffer: reclaimed the disk of drained partitions",
		"partitions", len(cands), "table_bytes", size, "took", time.Since(start))
	return nil
}

// tableBytes sums the on-disk size of the tables whose key range meets
// prefix (a table shared with other keys counts whole).
func tableBytes(tables []badger.TableInfo, prefix []byte) int64 {
	var n int64
	for _, t := range tables {
		left, right := userKey(t.Left), userKey(t.Right)
		if bytes.Compare(right, prefix) < 0 {
			continue // wholly before the prefix
		}
		if bytes.Compare(left, prefix) > 0 && !bytes.HasPrefix(left, prefix) {
			continue // wholly after it
		}
		n += int64(t.OnDiskSize)
	}
	return n
}

// userKey strips the 8-byte version Badger appends to the keys of a table.
func userKey(k []byte) []byte {
	if len(k) < 8 {
		return k
	}
	return k[:len(k)-8]
}

// reclaimNow runs in the committer: it drops the queue prefix of each of
// parts that is still empty. DropPrefix does nothing for a prefix without a
// live key, so an empty marker at Seq 0 (never a record's Seq; skipped by
// every reader) is written first; the drop removes it with the rest.
func (q *queue) reclaimNow(parts []int) error {
	var prefixes [][]byte
	txn := q.db.NewTransaction(true)
	defer txn.Discard()
	q.mu.Lock()
	for _, p := range parts {
		if q.parts[p].Records == 0 {
			// Every record of p is final: its segments, finished sets and
			// retry states go together.
			for _, k := range []byte{prefixQueue, prefixSeg, prefixSegDone, prefixRetry} {
				prefixes = append(prefixes, partPrefix(k, p))
			}
			q.parts[p].peak = 0
			q.open[p] = map[uint64]*segState{}
		}
	}
	q.mu.Unlock()
	if len(prefixes) == 0 {
		return nil
	}
	for _, pre := range prefixes {
		if err := txn.Set(append(pre[:3:3], make([]byte, 8)...), nil); err != nil {
			return fmt.Errorf("buffer: reclaim: %w", err)
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("buffer: reclaim: %w", err)
	}
	err := q.db.DropPrefix(prefixes...)
	q.mu.Lock()
	for _, p := range parts {
		q.dropSegsLocked(p) // its segments are gone: so are their copies
	}
	q.mu.Unlock()
	if err != nil {
		return fmt.Errorf("buffer: reclaim: drop prefix: %w", err)
	}
	return nil
}

// checkBudget logs one line when the directory's size crosses 80% or 100%
// of the disk budget upwards (and one when it is back under 80%), given the
// band last logged; it returns the current band.
func (q *queue) checkBudget(level int) int {
	size, budget := q.disk.size(q.opts.Path), q.diskBudget()
	now := 0
	switch {
	case size >= budget:
		now = 2
	case size*10 >= budget*8:
		now = 1
	}
	switch {
	case now > level && now == 2:
		q.log.Error("buffer: disk use reached its budget", "disk_bytes", size, "budget_bytes", budget,
			"queued_bytes", q.Stats().Bytes, "outcome_bytes", q.outcomeBytesNow())
	case now > level && now == 1:
		q.log.Warn("buffer: disk use passed 80% of its budget", "disk_bytes", size, "budget_bytes", budget)
	case now == 0 && level > 0:
		q.log.Info("buffer: disk use back under 80% of its budget", "disk_bytes", size, "budget_bytes", budget)
	}
	return now
}

func (q *queue) outcomeBytesNow() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.outcomeBytes
}

// collect runs value-log GC until it finds nothing to rewrite.
func (q *queue) collect(ctx context.Context) int {
	n := 0
	for ctx.Err() == nil {
		start := time.Now()
		err := q.db.RunValueLogGC(gcDiscardRatio)
		if err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				q.log.Warn("buffer: value log GC", "err", err)
			}
			break
		}
		n++
		q.log.Debug("buffer: value log file rewritten", "took", time.Since(start))
	}
	return n
}
