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
	flush := func() error {
		for p := range dirty {
			if err := wb.Set(metaKey(p), encodePartMeta(*metas[p])); err != nil {
				return err
			}
		}
		if err := wb.Commit(); err != nil {
			return fmt.Errorf("buffer: rehome: commit: %w", err)
		}
		wb = q.db.NewTransaction(true)
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
			return mergeSeq(txn, p, func(prefix byte, seq uint64, v []byte) error {
				recV := v
				if prefix == prefixDead {
					rv, _, err := splitDead(v)
					if err != nil {
						return nil // left in place; quarantined when read
					}
					recV = rv
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
					src.Bytes -= int64(len(v))
					if dst.Records == 0 {
						dst.Head = newSeq
					}
					dst.Records++
					dst.Bytes += int64(len(v))
					records++
				}
				for _, e := range []error{
					wb.Delete(seqKey(prefix, p, seq)),
					wb.Set(seqKey(prefix, to, newSeq), bytes.Clone(v)),
					wb.Set(stringKey(prefixIndex, rec.ID), encodeIndex(state, to, newSeq)),
				} {
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

// mergeSeq calls fn for partition p's queued records and dead letters in
// Seq order (the two kinds merged), with values valid only during the call.
func mergeSeq(txn *badger.Txn, p int, fn func(prefix byte, seq uint64, v []byte) error) error {
	type cur struct {
		prefix byte
		it     *badger.Iterator
	}
	var curs []cur
	for _, prefix := range []byte{prefixQueue, prefixDead} {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefix, p)})
		defer it.Close()
		it.Seek(seqKey(prefix, p, 0))
		curs = append(curs, cur{prefix, it})
	}
	for {
		best, bestSeq := -1, uint64(0)
		for i, c := range curs {
			for c.it.Valid() {
				if _, _, seq, ok := parseSeqKey(c.it.Item().Key()); ok {
					if best < 0 || seq < bestSeq {
						best, bestSeq = i, seq
					}
					break
				}
				c.it.Next() // a malformed key: not ours to move
			}
		}
		if best < 0 {
			return nil
		}
		c := curs[best]
		if err := c.it.Item().Value(func(v []byte) error { return fn(c.prefix, bestSeq, v) }); err != nil {
			return err
		}
		c.it.Next()
	}
}
