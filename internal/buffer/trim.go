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

// trimBatch bounds the outcomes one trim op deletes (one transaction).
const trimBatch = 1024

// planTrim stages the deletion of outcomes from the oldest: every outcome
// while the kept bytes exceed the budget, then those finished before
// cutoff, stopping at the first one that is neither. Outcomes of earlier
// versions (o <id>) are all older than the others (0 <id>) and go first.
func (q *queue) planTrim(o *op, s *txBatch, st *stage) (func(), error) {
	var freed int64
	cutoff := time.Now().Add(-q.opts.OutcomeTTL)
	n := 0
	for _, prefix := range []byte{prefixOutcomeV1, prefixOutcome} {
		more, err := q.trimRange(s, st, prefix, cutoff, &freed, &n)
		if err != nil {
			return nil, err
		}
		if !more {
			break
		}
	}
	o.trimmed = n
	return func() {
		s.outcomeBytes = max(s.outcomeBytes-freed, 0)
		if n > 0 {
			s.globalDirty = true
		}
	}, nil
}

// trimRange stages deletions in the outcomes under prefix, counting into
// freed and n. It reports whether the next range may be trimmed too: the
// range ran out before the batch was full and before an outcome to keep.
func (q *queue) trimRange(s *txBatch, st *stage, prefix byte, cutoff time.Time, freed *int64, n *int) (bool, error) {
	it := s.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}})
	defer it.Close()
	for it.Seek([]byte{prefix}); it.Valid(); it.Next() {
		if *n >= trimBatch {
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
		over := s.outcomeBytes-*freed > q.opts.OutcomeMaxBytes
		expired := out == nil || (!out.FinishedAt.IsZero() && out.FinishedAt.Before(cutoff))
		if !over && !expired {
			return false, nil
		}
		st.del(item.KeyCopy(nil))
		if out != nil && out.scope != "" {
			st.del(stringKey(prefixIdemScoped, out.scope))
		}
		// Outcomes written before the count existed were never counted:
		// the count is clamped at 0.
		*freed += size
		*n++
	}
	return true, nil
}

// trimOutcomes runs trim ops until a pass deletes nothing or fewer than a
// full batch. It returns the number of outcomes deleted.
func (q *queue) trimOutcomes(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		o := &op{kind: opTrim}
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
