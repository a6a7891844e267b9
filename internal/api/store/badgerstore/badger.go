// Package badgerstore is the embedded Store on Badger: every commit synced
// to disk, writes group-committed by one writer goroutine.
package badgerstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/flowedge/flowedge/internal/api/store"
)

// Options configures Open. The zero value of each field means
// the default named on it.
type Options struct {
	// Logger receives Badger's warnings and errors; nil discards them.
	Logger *slog.Logger
	// GCInterval is how often the value log is garbage-collected; 0 means
	// 5 minutes.
	GCInterval time.Duration
}

// maxBatch bounds how many Update calls share one transaction and one sync.
const maxBatch = 256

// Open opens (or creates) the Badger store in dir. Its options bound
// memory (two 16 MiB memtables, a 32 MiB block cache and a 16 MiB index
// cache) whatever the data size, and every commit is synced to disk
// (SyncWrites), so a committed Update survives kill -9 and power loss.
//
// Writes are group-committed: one goroutine runs the functions of pending
// Update calls one after another in a single transaction and commits it
// with one sync (Badger syncs once per transaction, so concurrent
// db.Update calls would pay one sync each). Being the only writer, it never
// meets a write conflict.
func Open(dir string, o Options) (store.Store, error) {
	if dir == "" {
		return nil, errors.New("store: empty data directory")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opt := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{log.With("component", "badger")}).
		WithLoggingLevel(badger.WARNING).
		WithMetricsEnabled(false).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(4 << 20).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithDetectConflicts(false) // one writer: there are no conflicts to detect
	db, err := badger.Open(opt)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	interval := o.GCInterval
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &badgerStore{db: db, cancel: cancel, reqs: make(chan *updateReq, maxBatch)}
	s.wg.Add(2)
	go s.gcLoop(ctx, interval)
	go s.commitLoop()
	return s, nil
}

type badgerStore struct {
	db     *badger.DB
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan *updateReq // to the committer; closed by Close
}

// updateReq is one Update call waiting for the committer.
type updateReq struct {
	fn    func(store.Tx) error
	done  chan error   // gets the call's result, once
	state atomic.Int32 // reqQueued, then reqTaken by the committer or reqAbandoned by the caller
}

// updateReq states: a caller whose context ends while its call is still
// queued abandons it, and the committer then skips it (fn never runs, so
// nothing it captured is touched after Update returned); once taken, the
// caller waits for the outcome.
const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

var _ store.Store = (*badgerStore)(nil)

func (s *badgerStore) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return storeErr(s.db.View(func(txn *badger.Txn) error { return fn(&badgerTx{txn: txn}) }))
}

func (s *badgerStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &updateReq{fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrStoreClosed
	}
	select {
	case s.reqs <- r: // the committer receives until Close, which waits for this lock
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err()
		}
		return <-r.done // the committer has it: its outcome is coming
	}
}

// commitLoop is the only writer: it takes the pending Update calls in
// batches and commits each batch as one synced transaction.
func (s *badgerStore) commitLoop() {
	defer s.wg.Done()
	for first := range s.reqs {
		batch := []*updateReq{first}
	more:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		for len(batch) > 0 {
			batch = batch[s.commitPrefix(batch):]
		}
	}
}

// commitPrefix runs the functions of reqs in order in one transaction and
// commits it, answering each call; it returns how many calls it answered.
// A function that fails before writing is simply answered with its error.
// One that fails after writing has left writes in the transaction that
// cannot be taken back alone: the transaction is dropped, the calls before
// it run again in a new one, and it is left for the next round, where it
// runs first.
func (s *badgerStore) commitPrefix(reqs []*updateReq) int {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	var good []*updateReq
	for i, r := range reqs {
		if r.state.Load() != reqTaken && !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue // abandoned by its caller
		}
		tx := &badgerTx{txn: txn}
		err := runUpdate(r.fn, tx)
		switch {
		case err == nil:
			good = append(good, r)
			continue
		case tx.writes == 0:
			r.done <- err
			continue
		case len(good) == 0: // alone in the transaction: drop its writes
			r.done <- err
			return i + 1
		}
		txn.Discard()
		for len(good) > 0 {
			good = good[s.commitPrefix(good):]
		}
		return i
	}
	err := storeErr(txn.Commit())
	for _, r := range good {
		r.done <- err
	}
	return len(reqs)
}

// runUpdate runs fn, turning a panic into an error so the committer lives on.
func runUpdate(fn func(store.Tx) error, tx store.Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("store: update panicked: %v", v)
		}
	}()
	return fn(tx)
}

var pingKey = []byte("m/ping")

func (s *badgerStore) Ping(ctx context.Context) error {
	if s.db.IsClosed() {
		return store.ErrStoreClosed
	}
	err := s.View(ctx, func(tx store.Tx) error {
		_, err := tx.Get(pingKey)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

func (s *badgerStore) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.reqs) // the committer answers what is queued, then ends
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
		s.err = s.db.Close()
	})
	return s.err
}

// gcLoop rewrites value-log files that are mostly garbage, so disk use
// returns near its baseline after deletes and expired idempotency records.
func (s *badgerStore) gcLoop(ctx context.Context, every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for ctx.Err() == nil && s.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// storeErr maps Badger's errors onto the Store's.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return store.ErrNotFound
	case errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%w: %v", store.ErrStoreClosed, err)
	}
	return err
}

// badgerTx is a transaction; it counts its writes, so the committer knows
// whether a failed function left any.
type badgerTx struct {
	txn    *badger.Txn
	writes int
}

func (t *badgerTx) Get(key []byte) ([]byte, error) {
	item, err := t.txn.Get(key)
	if err != nil {
		return nil, storeErr(err)
	}
	return item.ValueCopy(nil)
}

func (t *badgerTx) Set(key, value []byte, ttl time.Duration) error {
	t.writes++
	e := badger.NewEntry(key, value)
	if ttl > 0 {
		e = e.WithTTL(ttl)
	}
	return storeErr(t.txn.SetEntry(e))
}

func (t *badgerTx) Delete(key []byte) error {
	t.writes++
	return storeErr(t.txn.Delete(key))
}

func (t *badgerTx) Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error {
	opt := badger.DefaultIteratorOptions
	opt.Prefix = prefix
	opt.PrefetchSize = 64
	it := t.txn.NewIterator(opt)
	defer it.Close()
	start := prefix
	if from != nil && bytes.Compare(from, prefix) > 0 {
		start = from
	}
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return storeErr(err)
		}
		more, err := fn(item.KeyCopy(nil), v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// badgerLogger sends Badger's log lines to slog; Badger's info lines are
// debug here (it is chatty about compactions).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(line(f, a)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(line(f, a)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(line(f, a)) }
func (b badgerLogger) Debugf(f string, a ...any)   {}

func line(f string, a []any) string { return strings.TrimSpace(fmt.Sprintf(f, a...)) }
