package buffer

import (
	"context"
	"errors"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// gcDiscardRatio is the share of a value-log file that must be garbage for
// GC to rewrite it.
const gcDiscardRatio = 0.5

// gcLoop is the queue's value-log GC goroutine: every tuning.gcInterval, and
// tuning.gcDrainDelay after the queue became empty, it rewrites value-log
// files that are mostly garbage until none is left.
func (q *queue) gcLoop(ctx context.Context) {
	defer q.wg.Done()
	tick := time.NewTicker(q.tune.gcInterval)
	defer tick.Stop()
	var drain *time.Timer
	var drainC <-chan time.Time
	defer func() {
		if drain != nil {
			drain.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.gcKick:
			// Let the drain settle (the last acks, a memtable flush)
			// before collecting.
			if drain == nil {
				drain = time.NewTimer(q.tune.gcDrainDelay)
			} else {
				drain.Reset(q.tune.gcDrainDelay)
			}
			drainC = drain.C
			continue
		case <-drainC:
			drainC = nil
		case <-tick.C:
		}
		q.collect(ctx)
	}
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
