package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// Rehoming. The queue remembers the partition count it was last opened with
// (key "L"). When Open is given another count and Options.Route, every
// queued record, dead letter and park whose key now maps to another
// partition is moved there before anything is served, so a resize neither
// strands records in a partition that no longer exists nor sends them to a
// backend that no longer owns their key (it would answer 421).
//
// Order: a key's records all lived in one partition before the resize, so
// they are moved in their Seq order (queued records and dead letters
// merged) and appended at the end of their new partition, before any new
// request for that key can be appended. Per-key order therefore holds.
//
// Crash safety: moves are written in transactions that carry the counters
// they change, and the new count is stored only after the last one. A crash
// part-way leaves a consistent queue whose remaining misplaced records are
// moved at the next Open (records already moved map to where they are and
// are left alone).
//
// Cost: this is the one case where Open scans the queue (only when the
// count changed); it is logged with its figures.

var layoutKey = []byte{'L'}

// errRehomeInterrupted is what a test's simulated crash part-way returns.
var errRehomeInterrupted = errors.New("buffer: rehome interrupted (test)")

// rehomeBatch bounds the records moved per transaction.
const rehomeBatch = 512

// storedCount returns the partition count stored at the last Open, or 0 if
// none is stored (a store from before the count was kept, or a new one), and
// the highest partition with counters.
func storedCount(txn *badger.Txn) (count, highest int, err error) {
	item, err := txn.Get(layoutKey)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return 0, 0, fmt.Errorf("buffer: read partition count: %w", err)
	default:
		err = item.Value(func(v []byte) error {
			n, k := binary.Uvarint(v)
			if k <= 0 || n == 0 || n > maxPartitions {
				return corruptf("stored partition count")
			}
			count = int(n)
			return nil
		})
		if err != nil {
			return 0, 0, err
		}
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMeta}, Reverse: true})
	defer it.Close()
	it.Seek([]byte{prefixMeta, 0xff, 0xff})
	if it.Valid() {
		if k := it.Item().Key(); len(k) == 3 {
			highest = int(k[1])<<8 | int(k[2])
		}
	}
	return count, highest, nil
}

// rehome moves what is misplaced under the configured count and stores the
// count. It runs in Open after the counters are loaded and before the
// committer starts; moved tells Open to load them again.
func (q *queue) rehome() (moved bool, err error) {
	var stored, highest int
	err = q.db.View(func(txn *badger.Txn) (err error) {
		stored, highest, err = storedCount(txn)
		return err
	})
	if err != nil {
		return false, err
	}
	n := len(q.parts)
	if stored == n {
		return false, nil
	}
	if q.opts.Route == nil {
		// Nothing can be moved; the count is not stored either, so a later
		// Open with a Route still moves what is misplaced.
		if stored != 0 {
			q.log.Warn("buffer: the partition count changed and no Route is set: records stay where they are",
				"was", stored, "now", n)
		}
		return false, nil
	}
	scan := max(stored, highest+1, n)
	metas := map[int]*partMeta{}
	meta := func(p int) (*partMeta, error) {
		if m, ok := metas[p]; ok {
			return m, nil
		}
		if p < n { // loaded (and rebuilt if they were missing) by load
			m := q.parts[p].partMeta
			metas[p] = &m
			return &m, nil
		}
		var m partMeta
		err := q.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(metaKey(p))
			if errors.Is(err, badger.ErrKeyNotFound) {
				m.NextSeq, m.Head = 1, 1
				return nil
			}
			if err != nil {
				return err
			}
			return item.Value(func(v []byte) (err error) { m, err = decodePartMeta(v); return })
		})
		if err != nil {
			return nil, fmt.Errorf("buffer: rehome: counters of partition %d: %w", p, err)
		}
		m.NextSeq = max(m.NextSeq, 1)
		metas[p] = &m
		return &m, nil
	}

	var records, movedDead, movedParks int
	wb := q.db.NewTransaction(true)
	pending := 0
	dirty := map[int]bool{}
	committed := 0
	touched := map[segID]*segState{} // finished sets changed by moves out of segments
	flush := func() error {
		for sid, st := range touched {
			var err error
			if st.left == 0 {
				if err = wb.Delete(segKey(sid.p, sid.first)); err == nil {
					err = wb.Delete(segDoneKey(sid.p, sid.first))
				}
			} else {
				err = wb.Set(segDoneKey(sid.p, sid.first), encodeSegState(st))
			}
			if err != nil {
				return fmt.Errorf("buffer: rehome: stage: %w", err)
			}
		}
		for p := range dirty {
			if err := wb.Set(metaKey(p), encodePartMeta(*metas[p])); err != nil {
				return err
			}
		}
		if err := wb.Commit(); err != nil {
			return fmt.Errorf("buffer: rehome: commit: %w", err)
		}
		wb = q.db.NewTransaction(true)
		for sid, st := range touched {
			if sid.p >= len(q.open) {
				continue
			}
			if st.left == 0 {
				delete(q.open[sid.p], sid.first)
				q.mu.Lock()
				q.dropSegsLocked(sid.p) // deleted: its copies go
				q.mu.Unlock()
			} else {
				q.open[sid.p][sid.first] = st
			}
		}
		clear(touched)
		committed += pending
		pending = 0
		clear(dirty)
		if q.tune.rehomeFailAfter > 0 && committed >= q.tune.rehomeFailAfter {
			return errRehomeInterrupted
		}
		return nil
	}
	defer func() { wb.Discard() }()

	for p := 0; p < scan; p++ {
		err := q.db.View(func(txn *badger.Txn) error {
			var open map[uint64]*segState
			if p < len(q.open) {
				open = q.open[p]
			} else {
				var err error
				if open, err = loadOpen(txn, p); err != nil {
					return err
				}
			}
			return mergeSeq(txn, p, open, func(prefix byte, lr *liveRec) error {
				seq, v := lr.seq, lr.value
				recV := v
				if prefix == prefixDead {
					rv, _, err := splitDead(v)
					if err != nil {
						return nil // left in place; quarantined when read
					}
					recV = rv
				} else if lr.retry != nil {
					nv, err := liveValue(lr)
					if err != nil {
						return nil
					}
					v, recV = nv, nv
				}
				rec, err := decodeRecord(recV, p, seq, false)
				if err != nil {
					return nil
				}
				to := q.opts.Route(rec.Key, n)
				if to == p || to < 0 || to >= n {
					return nil
				}
				src, err := meta(p)
				if err != nil {
					return err
				}
				dst, err := meta(to)
				if err != nil {
					return err
				}
				newSeq := dst.NextSeq
				dst.NextSeq++
				state := indexQueued
				if prefix == prefixDead {
					state = indexDead
					src.Dead--
					dst.Dead++
					movedDead++
				} else {
					src.Records--
					src.Bytes -= int64(len(lr.value))
					if dst.Records == 0 {
						dst.Head = newSeq
					}
					dst.Records++
					dst.Bytes += int64(len(v))
					records++
				}
				// Moved records are stored on their own in their new
				// partition (a one-off: no segment is worth building).
				var errs []error
				if prefix == prefixSeg {
					sid := segID{p, lr.loc.seg}
					st := touched[sid]
					if st == nil {
						if o := open[sid.first]; o != nil {
							st = o.clone()
						} else {
							st = newSegState(int(lr.loc.n))
						}
						touched[sid] = st
					}
					st.finish(lr.index)
					errs = append(errs, wb.Delete(retryKey(p, seq)))
				} else {
					errs = append(errs, wb.Delete(seqKey(prefix, p, seq)))
				}
				outPrefix := prefix
				if prefix == prefixSeg {
					outPrefix = prefixQueue
				}
				errs = append(errs,
					wb.Set(seqKey(outPrefix, to, newSeq), bytes.Clone(v)),
					wb.Set(stringKey(prefixIndex, rec.ID), encodeIndex(state, to, newSeq)))
				for _, e := range errs {
					if e != nil {
						return fmt.Errorf("buffer: rehome: stage: %w", e)
					}
				}
				dirty[p], dirty[to] = true, true
				if pending++; pending >= rehomeBatch {
					return flush()
				}
				return nil
			})
		})
		if err != nil {
			return false, err
		}
		// Parks follow their key.
		err = q.db.View(func(txn *badger.Txn) error {
			pre := partPrefix(prefixParked, p)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
			defer it.Close()
			for it.Seek(pre); it.Valid(); it.Next() {
				key := string(it.Item().Key()[3:])
				to := q.opts.Route(key, n)
				if to == p || to < 0 || to >= n {
					continue
				}
				id, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
					return err
				}
				if err := wb.Set(parkedKey(to, key), id); err != nil {
					return err
				}
				movedParks++
				if pending++; pending >= rehomeBatch {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("buffer: rehome: parks of partition %d: %w", p, err)
		}
	}
	if err := flush(); err != nil {
		return false, err
	}
	if err := q.storeCount(); err != nil {
		return false, err
	}
	moved = records+movedDead+movedParks > 0
	if moved || stored != 0 {
		q.log.Warn("buffer: partition count changed: records moved to the partitions that now own their keys",
			"was", stored, "now", n, "records", records, "dead_letters", movedDead, "parks", movedParks)
	}
	return moved, nil
}

func (q *queue) storeCount() error {
	err := q.db.Update(func(txn *badger.Txn) error {
		return txn.Set(layoutKey, binary.AppendUvarint(nil, uint64(len(q.parts))))
	})
	if err != nil {
		return fmt.Errorf("buffer: store partition count: %w", err)
	}
	return nil
}

// mergeSeq calls fn for partition p's queued records (segments and single
// records, final ones skipped; prefix prefixSeg or prefixQueue) and dead
// letters (prefixDead), in Seq order, with values valid only during the
// call. open holds p's finished sets (nil for a partition beyond the
// configured count: its finished sets are read here).
func mergeSeq(txn *badger.Txn, p int, open map[uint64]*segState, fn func(prefix byte, lr *liveRec) error) error {
	if open == nil {
		var err error
		if open, err = loadOpen(txn, p); err != nil {
			return err
		}
	}
	dit := txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefixDead, p)})
	defer dit.Close()
	dit.Seek(seqKey(prefixDead, p, 1))
	// emitDead passes the dead letters before seq (all when seq is 0).
	emitDead := func(seq uint64) error {
		for ; dit.Valid(); dit.Next() {
			_, _, ds, ok := parseSeqKey(dit.Item().Key())
			if !ok {
				continue // a malformed key: not ours to move
			}
			if seq != 0 && ds >= seq {
				return nil
			}
			err := dit.Item().Value(func(v []byte) error {
				return fn(prefixDead, &liveRec{seq: ds, value: v})
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	var ferr error
	err := scanLive(txn, p, 1, func(first uint64, i int) bool {
		st := open[first]
		return st != nil && st.isDone(i)
	}, func(lr *liveRec) bool {
		if lr.err != nil || lr.seq == 0 {
			return true // damaged: left in place, quarantined when read
		}
		if ferr = emitDead(lr.seq); ferr != nil {
			return false
		}
		prefix := prefixQueue
		if lr.loc.seg != 0 {
			prefix = prefixSeg
		}
		ferr = fn(prefix, lr)
		return ferr == nil
	})
	if err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	return emitDead(0)
}
