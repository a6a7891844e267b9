package delivery

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// Item states.
const (
	stateQueued   = iota // ready for an attempt once its key's turn comes
	stateInFlight        // a worker holds it
	stateWaiting         // backing off until rec.NextAttemptAt
)

// item is one record held in a partition's window. rec's Attempts,
// NextAttemptAt and LastError are the delivery's facts; they, state and
// final are guarded by the loop's mu (readers: Lookup), and written only by
// the loop goroutine or the worker that holds the item.
type item struct {
	rec   *buffer.Record
	state int
	final *buffer.Outcome // set once the outcome is known, until the loop drops the item
}

// job is what a worker sends in one go: one record, a batch of records of
// distinct keys, or (request mode with Options.Pipeline) records of
// distinct keys pipelined on the worker's connection.
type job struct {
	items []*item
	probe bool // holds the gate's half-open probe token
	batch bool
}

// Fates of an item after a job, reported by the worker to the loop.
const (
	fateFinal   = iota // acknowledged (delivered or rejected)
	fateDead           // in the dead letters
	fateRetry          // backing off until rec.NextAttemptAt
	fateRequeue        // not attempted (batch fallback, unsent pipelined request): send again at once
	fateHanded         // abandoned on stop: still queued on disk
)

type report struct {
	job   *job
	fates []int
}

// earlyMsg is a replay (replay true) or a lifted park of dead letter
// rec.ID that came before its worker's report.
type earlyMsg struct {
	rec    *buffer.Record
	replay bool
}

// loop owns one partition's in-memory state: the window of records read
// from the queue and not yet final, grouped per ordering key in Seq order.
// Only the head of an ordering key's list may be in flight or backing off,
// which gives per-key order; a min-heap by Seq of candidate heads gives
// oldest-first dispatch, a min-heap by time holds heads backing off.
// Everything but mu's fields and the counters is touched by the loop
// goroutine only.
type loop struct {
	e    *Engine
	p    int
	gate *gate
	pipe int // records per request-mode job (Options.Pipeline where it applies); set by start

	mu   sync.Mutex
	live map[string]*item // id → item, every record in the window

	inFlightN atomic.Int32 // records in flight (partitions API)
	waitingN  atomic.Int32 // records backing off
	parkedN   atomic.Int32 // parked keys
	batchOff  atomic.Bool  // the backend refused batches: request mode
	batchBig  atomic.Bool  // the backend refused a batch as too large (logged once)

	cursor      uint64             // highest Seq read from the queue
	atEnd       bool               // the last Read returned everything there was
	keys        map[string][]*item // ordering key → records in Seq order
	ready       seqHeap            // candidate heads (checked again when popped)
	delayed     timeHeap           // heads backing off
	parked      map[string]string  // key → id of the dead letter parking it
	parkedItems map[string][]*item // heads waiting on a parked key
	spilled     map[string]uint64  // ordering key → lowest Seq of its records dropped back to disk
	rescans     []string           // spilled keys whose rescan failed: retried by the loop
	readErr     string             // the last read error logged: the same one is not logged again each second
	held        int                // records in the window
	heldBytes   int
	inFlight    int       // records in jobs under way
	jobsOut     int       // jobs under way
	batchesOut  int       // of which batches
	lastBatch   time.Time // when the last batch was handed to a worker
	// early holds replays and lifted parks of dead letters whose worker has
	// not reported yet (the dead letter is on disk before the report reaches
	// the loop): each is carried out once that report is taken, since the
	// record is still in the window and its park not yet recorded.
	early map[string]earlyMsg

	jobs    chan *job
	reports chan report
	replays chan *buffer.Record
	unparks chan *buffer.Record // ID and Key of the dead letter whose park is lifted
}

func newLoop(e *Engine, p int) *loop {
	log := e.log.With("partition", p, "backend", e.opt.BackendURL(p))
	return &loop{
		e: e, p: p,
		gate:        newGate(e.opt.BreakerFailures, e.opt.BreakerCooldown, e.opt.ProbePath == "", log),
		live:        make(map[string]*item),
		keys:        make(map[string][]*item),
		parked:      make(map[string]string),
		parkedItems: make(map[string][]*item),
		spilled:     make(map[string]uint64),
		early:       make(map[string]earlyMsg),
		jobs:        make(chan *job, e.opt.MaxInFlight),
		reports:     make(chan report, e.opt.MaxInFlight),
		replays:     make(chan *buffer.Record, 16),
		unparks:     make(chan *buffer.Record, 16),
	}
}

// start runs the loop and its workers under the engine's WaitGroup.
func (l *loop) start(ctx context.Context) {
	l.pipe = 1
	opt := &l.e.opt
	if opt.Pipeline > 1 && opt.Protocol == ProtocolRequest && !opt.H2C && !l.e.netHTTP &&
		newWire(opt.BackendURL(l.p), opt.Timeout) != nil {
		l.pipe = opt.Pipeline // only a worker's own connection pipelines
	}
	for range l.e.opt.MaxInFlight {
		l.e.wg.Add(1)
		go func() {
			defer l.e.wg.Done()
			var w *wire
			if !l.e.opt.H2C && !l.e.netHTTP {
				w = newWire(l.e.opt.BackendURL(l.p), l.e.opt.Timeout)
			}
			if w != nil {
				defer w.close()
			}
			for j := range l.jobs {
				l.reports <- l.run(ctx, j, w)
			}
		}()
	}
	l.e.wg.Add(1)
	go func() {
		defer l.e.wg.Done()
		defer close(l.jobs)
		l.loop(ctx)
	}()
}

// protocol is the protocol the partition speaks now.
func (l *loop) protocol() string {
	if l.e.opt.Protocol == ProtocolBatch && !l.batchOff.Load() {
		return ProtocolBatch
	}
	return ProtocolRequest
}

// counts returns records in flight, records backing off and parked keys.
func (l *loop) counts() (inFlight, waiting, parked int) {
	return int(l.inFlightN.Load()), int(l.waitingN.Load()), int(l.parkedN.Load())
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

func (l *loop) loop(ctx context.Context) {
	log := l.gate.log
	for {
		parked, err := l.e.q.Parked(l.p)
		if err == nil {
			l.parked = parked
			l.parkedN.Store(int32(len(parked)))
			break
		}
		log.Error("reading parked keys", "err", err)
		if !sleepCtx(ctx, time.Second) {
			return
		}
	}
	stopping := l.e.stopping
	var retryRead <-chan time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var gateCh <-chan struct{}
		var wake time.Time
		if stopping != nil {
			if len(l.rescans) > 0 && retryRead == nil {
				pending := l.rescans
				l.rescans = nil
				for _, k := range pending {
					l.rescan(k) // appends k again if it fails
				}
				if len(l.rescans) > 0 {
					retryRead = time.After(time.Second)
				}
			}
			if err := l.fill(); err != nil {
				if err.Error() != l.readErr {
					log.Error("reading queue", "err", err)
					l.readErr = err.Error()
				}
				retryRead = time.After(time.Second)
			} else {
				l.readErr = ""
			}
			gateCh, wake = l.dispatch(time.Now())
		} else if l.jobsOut == 0 {
			return // stopped and every worker reported back
		}
		if l.delayed.Len() > 0 && (wake.IsZero() || l.delayed[0].rec.NextAttemptAt.Before(wake)) {
			wake = l.delayed[0].rec.NextAttemptAt
		}
		var tick <-chan time.Time
		if !wake.IsZero() && stopping != nil {
			timer.Reset(max(time.Until(wake), 0))
			tick = timer.C
		}
		notify := l.e.q.Notify(l.p)
		select {
		case <-ctx.Done():
			// Workers end with ctx too; wait for their reports so none leaks.
			for l.jobsOut > 0 {
				l.complete(<-l.reports)
			}
			return
		case <-stopping:
			stopping = nil
		case <-notify:
			l.atEnd = false
		case <-retryRead:
			retryRead = nil
		case r := <-l.reports:
			l.complete(r)
		case rec := <-l.replays:
			l.addReplayed(rec)
		case m := <-l.unparks:
			l.unpark(m)
		case <-gateCh:
		case <-tick:
		}
		if tick != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// fill reads more records while the window has room. A full window whose
// room is held by keys that cannot move (backing off, parked) spills those
// keys' later records back to disk (see spill), so other keys go on.
func (l *loop) fill() error {
	opt := &l.e.opt
	for !l.atEnd {
		if l.held >= opt.Window || l.heldBytes >= opt.WindowBytes {
			if !l.spill() {
				return nil
			}
			continue
		}
		room, roomBytes := opt.Window-l.held, opt.WindowBytes-l.heldBytes
		recs, err := l.e.q.Read(l.p, l.cursor, room, roomBytes)
		if err != nil {
			return err
		}
		size := 0
		for _, rec := range recs {
			if rec.Seq > l.cursor {
				l.cursor = rec.Seq
			}
			size += len(rec.Body)
			l.add(&item{rec: rec})
		}
		// Fewer than asked, and not for want of room: nothing more on disk.
		if len(recs) == 0 || (len(recs) < room && size < roomBytes) {
			l.atEnd = true
		}
	}
	return nil
}

// rescanBatch bounds the records a spilled key takes back into the window at
// a time.
const rescanBatch = 64

// spill drops from memory the later records of every ordering key whose
// head cannot be sent now (backing off or parked); they stay queued on disk
// and are read again, in order, when the key's last record in memory is
// final (rescan). It reports whether it freed anything.
func (l *loop) spill() bool {
	freed := false
	for k, list := range l.keys {
		if len(list) < 2 {
			continue
		}
		head := list[0]
		if _, parked := l.parked[head.rec.Key]; head.state != stateWaiting && !parked {
			continue
		}
		from := list[1].rec.Seq
		l.mu.Lock()
		for _, it := range list[1:] {
			delete(l.live, it.rec.ID)
			l.held--
			l.heldBytes -= len(it.rec.Body)
		}
		l.mu.Unlock()
		clear(list[1:])
		l.keys[k] = list[:1]
		if old, ok := l.spilled[k]; !ok || from < old {
			l.spilled[k] = from
		}
		freed = true
	}
	return freed
}

// rescan reads back the spilled records of ordering key k (Seq from
// l.spilled[k] up to the cursor; later ones come through fill), at most
// rescanBatch at a time.
func (l *loop) rescan(k string) {
	after := l.spilled[k] - 1
	delete(l.spilled, k)
	added := 0
	for after < l.cursor {
		recs, err := l.e.q.Read(l.p, after, 256, l.e.opt.WindowBytes)
		if err != nil {
			l.gate.log.Error("reading spilled records again", "err", err)
			l.spilled[k] = after + 1
			l.rescans = append(l.rescans, k)
			return
		}
		if len(recs) == 0 {
			return
		}
		for _, rec := range recs {
			if rec.Seq > l.cursor {
				return // fill reads it in its turn
			}
			after = rec.Seq
			if l.orderKey(rec) != k {
				continue
			}
			if added == rescanBatch {
				l.spilled[k] = rec.Seq
				return
			}
			l.add(&item{rec: rec})
			added++
		}
	}
}

// add puts it into its key's list in Seq order (behind a head that is in
// flight or backing off).
func (l *loop) add(it *item) {
	if from, ok := l.spilled[l.orderKey(it.rec)]; ok && it.rec.Seq >= from {
		return // on disk; rescan reads it when its key's turn comes
	}
	l.mu.Lock()
	if _, dup := l.live[it.rec.ID]; dup {
		l.mu.Unlock()
		return
	}
	l.live[it.rec.ID] = it
	l.mu.Unlock()
	k := l.orderKey(it.rec)
	list := l.keys[k]
	i := len(list)
	for i > 0 && list[i-1].rec.Seq > it.rec.Seq && list[i-1].state == stateQueued {
		i--
	}
	list = append(list, nil)
	copy(list[i+1:], list[i:])
	list[i] = it
	l.keys[k] = list
	l.held++
	l.heldBytes += len(it.rec.Body)
	if i == 0 {
		l.candidate(it)
	}
}

// candidate makes a queued head eligible: at once, or when its persisted
// backoff (from before a restart) ends.
func (l *loop) candidate(it *item) {
	if it.rec.Attempts > 0 && time.Now().Before(it.rec.NextAttemptAt) {
		l.setState(it, stateWaiting)
		heap.Push(&l.delayed, it)
		return
	}
	heap.Push(&l.ready, it)
}

func (l *loop) setState(it *item, s int) {
	l.mu.Lock()
	old := it.state
	it.state = s
	l.mu.Unlock()
	if old == stateWaiting {
		l.waitingN.Add(-1)
	}
	if s == stateWaiting {
		l.waitingN.Add(1)
	}
}

// dispatch hands jobs to the workers while there is room and the gate lets
// them through. When the gate holds, it returns what to wait for.
func (l *loop) dispatch(now time.Time) (gateCh <-chan struct{}, wake time.Time) {
	for l.delayed.Len() > 0 && !l.delayed[0].rec.NextAttemptAt.After(now) {
		it := heap.Pop(&l.delayed).(*item)
		if it.state == stateWaiting {
			l.setState(it, stateQueued)
			heap.Push(&l.ready, it)
		}
	}
	opt := &l.e.opt
	maxJobs := opt.MaxInFlight
	batch := l.protocol() == ProtocolBatch
	if batch {
		maxJobs = min(maxConcurrentJobs, opt.MaxInFlight)
	}
	for l.ready.Len() > 0 && l.inFlight < opt.MaxInFlight && l.jobsOut < maxJobs {
		if next := l.lastBatch.Add(batchStagger); batch && l.batchesOut > 0 && now.Before(next) && !l.fullBatchFits() {
			return nil, next // gather behind the batch in flight (batchStagger)
		}
		ok, probe, ch, w := l.gate.admit(now)
		if !ok {
			return ch, w
		}
		// A probe goes alone. A batch, or a pipelined job, holds heads of
		// distinct ordering keys (one under ordering "partition", where
		// MaxInFlight is 1), bounded by BatchBytes (pipelineBytes too).
		limit, maxBytes := 1, opt.BatchBytes
		switch {
		case probe:
		case batch:
			limit = min(opt.BatchMax, opt.MaxInFlight-l.inFlight)
		case l.pipe > 1:
			limit = min(l.pipe, opt.MaxInFlight-l.inFlight)
			maxBytes = min(maxBytes, pipelineBytes)
		}
		j := &job{probe: probe}
		size := 0
		for len(j.items) < limit && l.ready.Len() > 0 {
			it := l.ready[0]
			if !l.eligible(it) {
				heap.Pop(&l.ready)
				continue
			}
			sz := encodedSize(it.rec)
			if len(j.items) > 0 && size+sz > maxBytes {
				break
			}
			heap.Pop(&l.ready)
			size += sz
			j.items = append(j.items, it)
			// In flight from here: a second entry of it in the heap (a
			// stale one, left when a replay took its place as its key's
			// head) is no longer eligible, so a job never holds a record
			// twice (it once could: two requests, two settles of one item).
			l.setState(it, stateInFlight)
		}
		if len(j.items) == 0 {
			if probe {
				l.gate.report(true, evidenceNone, "")
			}
			break
		}
		// A record too large for a batch on its own goes as a request.
		j.batch = batch && size <= opt.BatchBytes
		l.inFlight += len(j.items)
		l.inFlightN.Add(int32(len(j.items)))
		l.jobsOut++
		if j.batch {
			l.batchesOut++
			l.lastBatch = now
		}
		l.jobs <- j // buffered to the worker count: never blocks
	}
	return nil, time.Time{}
}

// pipelineBytes bounds the requests of a pipelined job (one record larger
// goes alone). The worker writes them all before it reads an answer, while
// the backend answers each before it reads the next: requests that fit the
// socket buffers cannot leave both sides blocked writing (a backend sending
// large answers to a large pipelined job would, until the timeout, again on
// every retry).
const pipelineBytes = 64 << 10

// fullBatchFits says whether a full batch is ready and would fit beside
// those in flight: waiting would not make it larger, so it goes at once (a
// backlog drains with several batches in flight when max_in_flight leaves
// room for them). The ready heap may hold stale entries and heads of
// parked keys, so the batch may come out smaller: only efficiency is lost.
func (l *loop) fullBatchFits() bool {
	opt := &l.e.opt
	return l.ready.Len() >= opt.BatchMax && opt.MaxInFlight-l.inFlight >= opt.BatchMax
}

// eligible says whether a popped candidate may be sent now; a head of a
// parked key is set aside until the park is lifted.
func (l *loop) eligible(it *item) bool {
	if it.state != stateQueued {
		return false
	}
	if list := l.keys[l.orderKey(it.rec)]; len(list) == 0 || list[0] != it {
		return false // no longer the head; pushed again when it is
	}
	if _, ok := l.parked[it.rec.Key]; ok {
		l.parkedItems[it.rec.Key] = append(l.parkedItems[it.rec.Key], it)
		return false
	}
	return true
}

// complete takes a worker's report.
func (l *loop) complete(r report) {
	l.jobsOut--
	if r.job.batch {
		l.batchesOut--
	}
	l.inFlight -= len(r.job.items)
	l.inFlightN.Add(-int32(len(r.job.items)))
	for i, it := range r.job.items {
		switch r.fates[i] {
		case fateFinal, fateDead:
			l.remove(it, r.fates[i] == fateDead)
		case fateRetry:
			l.setState(it, stateWaiting)
			heap.Push(&l.delayed, it)
		default: // requeue, handed
			l.setState(it, stateQueued)
			heap.Push(&l.ready, it)
		}
	}
	for _, it := range r.job.items {
		if m, ok := l.early[it.rec.ID]; ok {
			delete(l.early, it.rec.ID)
			if m.replay {
				l.addReplayed(m.rec)
			} else {
				l.unpark(m.rec)
			}
		}
	}
}

// reporting says whether id is in a job whose report the loop has not taken
// yet. Loop goroutine only.
func (l *loop) reporting(id string) bool {
	it, ok := l.live[id]
	return ok && it.state == stateInFlight
}

// remove drops a final record and promotes its key's next record.
func (l *loop) remove(it *item, dead bool) {
	l.setState(it, stateQueued)
	l.mu.Lock()
	delete(l.live, it.rec.ID)
	l.mu.Unlock()
	k := l.orderKey(it.rec)
	list := l.keys[k]
	for i, x := range list {
		if x == it {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	l.held--
	l.heldBytes -= len(it.rec.Body)
	if dead && l.e.opt.OnDead == OnDeadPark {
		if _, ok := l.parked[it.rec.Key]; !ok {
			l.parkedN.Add(1)
		}
		l.parked[it.rec.Key] = it.rec.ID
	}
	if len(list) == 0 {
		delete(l.keys, k)
		if _, ok := l.spilled[k]; ok {
			l.rescan(k)
		}
		return
	}
	l.keys[k] = list
	if list[0].state == stateQueued {
		l.candidate(list[0])
	}
}

// addReplayed takes a record replayed from the dead letters. A record above
// the cursor is left to fill, which will read it in its turn.
func (l *loop) addReplayed(rec *buffer.Record) {
	if l.reporting(rec.ID) {
		// Replayed as soon as it was buried: the window still holds the
		// dead record (add would drop the replay as a duplicate) and the
		// report would park its key after the lift. Both used to happen,
		// leaving the record undelivered and its key parked until a restart.
		l.early[rec.ID] = earlyMsg{rec: rec, replay: true}
		return
	}
	l.lift(rec.Key, rec.ID)
	if rec.Seq > l.cursor {
		return
	}
	l.add(&item{rec: rec})
}

// unpark lifts the park of m.Key by dead letter m.ID (discarded), once the
// dead letter's report has been taken.
func (l *loop) unpark(m *buffer.Record) {
	if l.reporting(m.ID) {
		l.early[m.ID] = earlyMsg{rec: m}
		return
	}
	l.lift(m.Key, m.ID)
}

// lift removes the park of key if dead letter id holds it.
func (l *loop) lift(key, id string) {
	if l.parked[key] != id {
		return
	}
	delete(l.parked, key)
	l.parkedN.Add(-1)
	for _, it := range l.parkedItems[key] {
		heap.Push(&l.ready, it)
	}
	delete(l.parkedItems, key)
}

// send hands rec to the loop on ch. The caller's context cannot cut it
// short: the queue has already taken the change (a replayed record back
// below the loop's cursor, a lifted park), and a loop that never heard of
// it would leave the record stuck until a restart. It returns without
// handing when the engine never started or is stopping (a loop that starts
// reads the queue and its parked keys afresh).
func (l *loop) send(ch chan *buffer.Record, rec *buffer.Record) {
	if !l.e.started.Load() {
		return
	}
	select {
	case ch <- rec:
	case <-l.e.stopping:
	}
}

// view is what the loop knows of id.
func (l *loop) view(id string) (View, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	it, ok := l.live[id]
	if !ok {
		return View{}, false
	}
	r := it.rec
	v := View{ID: id, Partition: l.p, Key: r.Key, Status: buffer.StatusQueued,
		Attempts: r.Attempts, LastError: r.LastError, ReceivedAt: r.ReceivedAt}
	switch {
	case it.final != nil:
		t := it.final.FinishedAt
		v.Status, v.ResponseStatus, v.FinishedAt, v.LastError = it.final.Status, it.final.ResponseStatus, &t, it.final.LastError
	case it.state == stateInFlight:
		v.Status = buffer.StatusInFlight
	case it.state == stateWaiting:
		t := r.NextAttemptAt
		v.NextAttemptAt = &t
	}
	return v, true
}

// final returns id's outcome if a worker has settled it and the loop still
// holds it.
func (l *loop) final(id string) (*buffer.Outcome, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if it, ok := l.live[id]; ok && it.final != nil {
		return it.final, true
	}
	return nil, false
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

// timeHeap is a min-heap of items by NextAttemptAt.
type timeHeap []*item

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].rec.NextAttemptAt.Before(h[j].rec.NextAttemptAt) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(*item)) }
func (h *timeHeap) Pop() any {
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
