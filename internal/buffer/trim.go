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
// that started over the budget leaves.
const trimLowWater = 7

// trimBatch bounds the outcomes one trim op deletes (one transaction).
const trimBatch = 1024

// planTrim stages the deletion of outcomes from the oldest: when the pass
// starts (o.trimGoing false), only if the kept bytes exceed the budget or
// the oldest outcome finished OutcomeTTL/16 before the age limit; then
// every outcome while the kept bytes exceed the low-water mark, and those
// finished before the age limit, stopping at the first one that is
// neither. Outcomes of earlier versions (o <id>) are all older than the
// others (0 <id>) and go first.
func (q *queue) planTrim(o *op, s *txBatch, st *stage) (func(), error) {
	tr := trimRun{
		cutoff: time.Now().Add(-q.opts.OutcomeTTL),
		going:  o.trimGoing,
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
	o.trimmed = tr.n
	return func() {
		s.outcomeBytes = max(s.outcomeBytes-tr.freed, 0)
		if tr.n > 0 {
			s.globalDirty = true
		}
	}, nil
}

// trimRun is one trim op's progress.
type trimRun struct {
	cutoff, start time.Time // the age limit; an age-limit pass starts past start
	low           int64     // the low-water mark of a pass that started over the budget
	going         bool      // the pass has started deleting
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
		finished := time.Time{}
		if out != nil {
			finished = out.FinishedAt
		}
		kept := s.outcomeBytes - tr.freed
		if !tr.going {
			old := out == nil || (!finished.IsZero() && finished.Before(tr.start))
			if kept <= q.opts.OutcomeMaxBytes && !old {
				return false, nil
			}
			tr.going = true
		}
		expired := out == nil || (!finished.IsZero() && finished.Before(tr.cutoff))
		if kept <= tr.low && !expired {
			return false, nil
		}
		st.del(item.KeyCopy(nil))
		if out != nil && out.scope != "" {
			st.del(stringKey(prefixIdemScoped, out.scope))
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
	total := 0
	for ctx.Err() == nil {
		o := &op{kind: opTrim, trimGoing: total > 0}
		if err := q.submit(ctx, o); err != nil {
			return total, err
		}
		if o.err != nil {
			return total, o.err
		}
		total += o.trimmed
		if o.trimmed < trimBatch {
			break
		}
	}
	return total, nil
}
