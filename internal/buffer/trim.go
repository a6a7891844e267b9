package buffer

import (
	"context"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Outcome budget.
//
// Outcomes (0 <id>) are kept for lookups and idempotent repeats within
// Options.OutcomeMaxBytes and Options.OutcomeTTL. The committer counts
// their encoded size (persisted with the global counters); when the count
// passes the budget, or periodically for the age limit, the GC goroutine
// has the committer delete outcomes from the start of the key range, the
// oldest first: delivery ids are UUIDv7, which sort by time. Deleting an
// outcome deletes its record's idempotency entry (K <scope>) too, so the
// idempotency keys are bounded with the outcomes (a repeat after its
// outcome was dropped is a new request; one within the budget and the TTL
// is answered). A lookup of a dropped outcome is ErrNotFound ("unknown").
//
// Trims come in bulk, seldom: a pass that starts over the budget goes on
// down to trimLowWater of it, and one for the age limit starts only once
// the oldest outcome is OutcomeTTL/16 past it (it then drops every outcome
// past the TTL). The deletions sort at the bottom of the outcome range: a
// memtable holding some spans every kept outcome, and its compaction
// rewrites them all. Trimmed a few at a time after every commit, as the
// count passes the budget, every memtable would.

// trimLowWater is the share of OutcomeMaxBytes (in eighths) a trim pass
// that started over the budget leaves; a pass for the age limit drops only
// what is past it.
const trimLowWater = 7

// trimBatch bounds the outcomes one trim op deletes (one transaction).
const trimBatch = 1024

// trimMode is why a trim pass started, which decides how far it goes.
type trimMode uint8

const (
	trimIdle   trimMode = iota // not started: the first outcome decides
	trimBudget                 // over OutcomeMaxBytes: down to the low-water mark, and past the TTL
	trimAge                    // the oldest outcome OutcomeTTL/16 past the TTL: everything past the TTL
)

// planTrim stages the deletion of outcomes from the oldest. A pass starts
// (o.trimMode trimIdle) only if the kept bytes exceed the budget, or if the
// oldest outcome finished OutcomeTTL/16 before the age limit; it then
// deletes every outcome finished before the age limit and, if it started
// over the budget, every outcome while the kept bytes exceed the low-water
// mark, stopping at the first one to keep. Outcomes of earlier versions
// (o <id>) are all older than the others (0 <id>) and go first.
func (q *queue) planTrim(o *op, s *txBatch, st *stage) (func(), error) {
	tr := trimRun{
		cutoff: time.Now().Add(-q.opts.OutcomeTTL),
		mode:   o.trimMode,
		low:    q.opts.OutcomeMaxBytes / 8 * trimLowWater,
	}
	tr.start = tr.cutoff.Add(-q.opts.OutcomeTTL / 16)
	prefixes := []byte{prefixOutcome}
	if q.oldOutcomes.Load() {
		prefixes = []byte{prefixOutcomeV1, prefixOutcome}
	}
	for _, prefix := range prefixes {
		more, err := q.trimRange(s, st, prefix, &tr)
		if err != nil {
			return nil, err
		}
		if prefix == prefixOutcomeV1 && more && tr.n == 0 {
			q.oldOutcomes.Store(false) // none left: later trims skip the range
		}
		if !more {
			break
		}
	}
	o.trimmed, o.trimMode = tr.n, tr.mode
	return func() {
		s.outcomeBytes = max(s.outcomeBytes-tr.freed, 0)
		if tr.n > 0 {
			s.globalDirty = true
		}
	}, nil
}

// trimRun is one trim op's progress.
type trimRun struct {
	cutoff, start time.Time // the age limit; an age pass starts past start
	low           int64     // where a pass that started over the budget stops
	mode          trimMode
	freed         int64
	n             int
}

// trimRange stages deletions in the outcomes under prefix. It reports
// whether the next range may be trimmed too: the range ran out before the
// batch was full and before an outcome to keep.
func (q *queue) trimRange(s *txBatch, st *stage, prefix byte, tr *trimRun) (bool, error) {
	it := s.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}})
	defer it.Close()
	for it.Seek([]byte{prefix}); it.Valid(); it.Next() {
		if tr.n >= trimBatch {
			return false, nil
		}
		item := it.Item()
		var (
			out  *Outcome
			size int64
		)
		err := item.Value(func(v []byte) error {
			size = int64(len(v))
			out, _ = decodeOutcome(v) // a damaged outcome is dropped like an old one
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("buffer: trim outcomes: %w", err)
		}
		// An outcome without a finish time (Ack stamps every outcome; only
		// damage that passes the checksum, or a finish time stored as 0,
		// leaves one) counts as expired, like a damaged one: kept, it would
		// stop every age pass here.
		var finished time.Time
		if out != nil {
			finished = out.FinishedAt
		}
		kept := s.outcomeBytes - tr.freed
		if tr.mode == trimIdle {
			switch {
			case kept > q.opts.OutcomeMaxBytes:
				tr.mode = trimBudget
			case finished.Before(tr.start): // a zero time too
				tr.mode = trimAge
			default:
				return false, nil
			}
		}
		expired := finished.Before(tr.cutoff)
		if !expired && (tr.mode != trimBudget || kept <= tr.low) {
			return false, nil
		}
		st.del(item.KeyCopy(nil))
		if out != nil && out.scope != "" {
			// The idempotency entry goes with its outcome, unless it names
			// a later record by now (it expired first and the key was used
			// again, or a relayed 429 let it go): that one keeps it.
			k := stringKey(prefixIdemScoped, out.scope)
			v, found, err := getCopy(s.txn, k)
			if err != nil {
				return false, fmt.Errorf("buffer: trim outcomes: %w", err)
			}
			if found {
				if id, _, err := decodeIdem(v); err != nil || id == string(item.Key()[1:]) {
					st.del(k)
				}
			}
		}
		// Outcomes written before the count existed were never counted:
		// the count is clamped at 0.
		tr.freed += size
		tr.n++
	}
	return true, nil
}

// trimOutcomes runs trim ops until a pass deletes nothing or fewer than a
// full batch. It returns the number of outcomes deleted.
func (q *queue) trimOutcomes(ctx context.Context) (int, error) {
	total, mode := 0, trimIdle
	for ctx.Err() == nil {
		o := &op{kind: opTrim, trimMode: mode}
		if err := q.submit(ctx, o); err != nil {
			return total, err
		}
		if o.err != nil {
			return total, o.err
		}
		total, mode = total+o.trimmed, o.trimMode
		if o.trimmed < trimBatch {
			break
		}
	}
	return total, nil
}
