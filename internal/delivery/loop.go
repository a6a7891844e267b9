package delivery

import (
	"container/heap"
	"context"
	"sync/atomic"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// item is one record held in a partition's window.
type item struct {
	rec        *buffer.Record
	dispatched bool
}

// done is a worker's report to its loop.
type done struct {
	it     *item
	dead   bool // went to the dead letters
	handed bool // handed back (shutdown): still queued, not final
}

type unparkMsg struct{ key, id string }

// loop owns one partition's in-memory state: the window of records read from
// the queue and not yet final, grouped per ordering key in Seq order. Only
// the head of an ordering key's list may be in flight, which gives per-key
// order; a min-heap by Seq of candidate heads gives oldest-first dispatch.
// Everything here is touched by the loop goroutine only, except inFlight
// (read by /edge/v1/partitions) and the channels.
type loop struct {
	e *Engine
	p int

	cursor      uint64             // highest Seq read from the queue
	atEnd       bool               // the last Read returned everything there was
	keys        map[string][]*item // ordering key → records in Seq order
	ready       seqHeap            // candidate heads (checked again when popped)
	parked      map[string]string  // key → id of the dead letter parking it
	parkedItems map[string][]*item // heads waiting on a parked key
	held        int                // records in the window
	heldBytes   int
	inFlight    atomic.Int32

	done    chan done
	replays chan *buffer.Record
	unparks chan unparkMsg
}

func newLoop(e *Engine, p int) *loop {
	return &loop{
		e: e, p: p,
		keys:        make(map[string][]*item),
		parked:      make(map[string]string),
		parkedItems: make(map[string][]*item),
		done:        make(chan done, e.opt.MaxInFlight),
		replays:     make(chan *buffer.Record, 16),
		unparks:     make(chan unparkMsg, 16),
	}
}

// orderKey is the key that serialises rec under the engine's ordering.
func (l *loop) orderKey(rec *buffer.Record) string {
	switch l.e.opt.Ordering {
	case OrderPartition:
		return ""
	case OrderNone:
		return rec.ID
	default:
		return rec.Key
	}
}

func (l *loop) run(ctx context.Context) {
	log := l.e.log.With("partition", l.p)
	for {
		parked, err := l.e.q.Parked(l.p)
		if err == nil {
			l.parked = parked
			break
		}
		log.Error("reading parked keys", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return
		}
	}
	stopping := l.e.stopping
	var retryRead <-chan time.Time
	for {
		if stopping != nil {
			if err := l.fill(); err != nil {
				log.Error("reading queue", "err", err)
				retryRead = time.After(time.Second)
			}
			l.dispatch(ctx)
		} else if l.inFlight.Load() == 0 {
			return // stopped and every worker reported back
		}
		notify := l.e.q.Notify(l.p)
		select {
		case <-ctx.Done():
			// Workers end with ctx too; wait for their reports so none leaks.
			for l.inFlight.Load() > 0 {
				l.complete(<-l.done)
			}
			return
		case <-stopping:
			stopping = nil
		case <-notify:
			l.atEnd = false
		case <-retryRead:
			retryRead = nil
		case d := <-l.done:
			l.complete(d)
		case rec := <-l.replays:
			l.addReplayed(rec)
		case m := <-l.unparks:
			l.lift(m.key, m.id)
		}
	}
}

// fill reads more records while the window has room.
func (l *loop) fill() error {
	opt := &l.e.opt
	for !l.atEnd && l.held < opt.Window && l.heldBytes < opt.WindowBytes {
		room := opt.Window - l.held
		recs, err := l.e.q.Read(l.p, l.cursor, room, opt.WindowBytes-l.heldBytes)
		if err != nil {
			return err
		}
		if len(recs) < room {
			l.atEnd = true
		}
		for _, rec := range recs {
			if rec.Seq > l.cursor {
				l.cursor = rec.Seq
			}
			l.add(&item{rec: rec})
		}
		if len(recs) == 0 {
			l.atEnd = true
		}
	}
	return nil
}

// add puts it into its key's list in Seq order (behind a head in flight).
func (l *loop) add(it *item) {
	k := l.orderKey(it.rec)
	list := l.keys[k]
	i := len(list)
	for i > 0 && list[i-1].rec.Seq > it.rec.Seq && !list[i-1].dispatched {
		i--
	}
	list = append(list, nil)
	copy(list[i+1:], list[i:])
	list[i] = it
	l.keys[k] = list
	l.held++
	l.heldBytes += len(it.rec.Body)
	if i == 0 {
		heap.Push(&l.ready, it)
	}
}

// dispatch starts workers for eligible heads, oldest first.
func (l *loop) dispatch(ctx context.Context) {
	for int(l.inFlight.Load()) < l.e.opt.MaxInFlight && l.ready.Len() > 0 {
		it := heap.Pop(&l.ready).(*item)
		if it.dispatched {
			continue
		}
		if list := l.keys[l.orderKey(it.rec)]; len(list) == 0 || list[0] != it {
			continue // no longer the head; pushed again when it is
		}
		if _, ok := l.parked[it.rec.Key]; ok {
			l.parkedItems[it.rec.Key] = append(l.parkedItems[it.rec.Key], it)
			continue
		}
		it.dispatched = true
		l.inFlight.Add(1)
		l.e.wg.Add(1)
		go func() {
			defer l.e.wg.Done()
			l.done <- l.e.deliver(ctx, l.p, it)
		}()
	}
}

// complete removes a finished record and promotes its key's next record.
func (l *loop) complete(d done) {
	l.inFlight.Add(-1)
	k := l.orderKey(d.it.rec)
	list := l.keys[k]
	for i, it := range list {
		if it == d.it {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	l.held--
	l.heldBytes -= len(d.it.rec.Body)
	if d.handed {
		// Still queued on disk; it is read again after a restart.
		d.it.dispatched = false
	}
	if d.dead && l.e.opt.OnDead == OnDeadPark {
		l.parked[d.it.rec.Key] = d.it.rec.ID
	}
	if len(list) == 0 {
		delete(l.keys, k)
		return
	}
	l.keys[k] = list
	if !list[0].dispatched {
		heap.Push(&l.ready, list[0])
	}
}

// addReplayed takes a record replayed from the dead letters. A record above
// the cursor is left to fill, which will read it in its turn.
func (l *loop) addReplayed(rec *buffer.Record) {
	l.lift(rec.Key, rec.ID)
	if rec.Seq > l.cursor {
		return
	}
	l.add(&item{rec: rec})
}

// lift removes the park of key if dead letter id holds it.
func (l *loop) lift(key, id string) {
	if l.parked[key] != id {
		return
	}
	delete(l.parked, key)
	for _, it := range l.parkedItems[key] {
		heap.Push(&l.ready, it)
	}
	delete(l.parkedItems, key)
}

// inject hands a replayed record to the loop.
func (l *loop) inject(ctx context.Context, rec *buffer.Record) {
	select {
	case l.replays <- rec:
	case <-ctx.Done():
	case <-l.e.stopping:
	}
}

func (l *loop) unpark(ctx context.Context, key, id string) {
	select {
	case l.unparks <- unparkMsg{key, id}:
	case <-ctx.Done():
	case <-l.e.stopping:
	}
}

// seqHeap is a min-heap of items by Seq.
type seqHeap []*item

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i].rec.Seq < h[j].rec.Seq }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(*item)) }
func (h *seqHeap) Pop() any {
	old := *h
	n := len(old)
	it := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return it
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
