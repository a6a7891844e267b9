package buffer

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	badger "github.com/dgraph-io/badger/v4"
)

// Segments.
//
// A group commit stores the records it appends to one partition as one
// Badger entry, a segment, keyed by the Seq of its first record (the Seqs
// of a segment are consecutive). A record therefore costs a share of one
// LSM entry instead of its own entry, an id index entry and a counter
// update; and a segment is deleted by one tombstone once all its records
// are final. Records that become final while others of their segment are
// not (acknowledged, dead-lettered, quarantined) are marked in the
// segment's finished set: in memory, and in an entry `a <p> <first>`
// written with the same commit (one per segment touched, not per record).
// A failed attempt writes the record's retry state to `r <p> <seq>`; the
// segment is never rewritten. Each record in a segment keeps its own CRC, so
// a damaged record is quarantined alone.
//
// Records stored on their own (`q <p> <seq>`: by earlier versions of the
// queue, and dead letters replayed into the queue) are read merged with the
// segments in Seq order, so a directory written by an earlier version is
// served as it is and drains.

// recLoc is where a record read from the queue is stored.
type recLoc struct {
	seg  uint64 // Seq of the first record of its segment; 0 = stored on its own (or unknown)
	n    uint32 // records in that segment
	size int64  // encoded size of the record (what Bytes counts)
}

// segKey, segDoneKey and retryKey are the keys of a segment, its finished
// set and a record's retry state.
func segKey(p int, first uint64) []byte     { return seqKey(prefixSeg, p, first) }
func segDoneKey(p int, first uint64) []byte { return seqKey(prefixSegDone, p, first) }
func retryKey(p int, seq uint64) []byte     { return seqKey(prefixRetry, p, seq) }

// Segment value, version 1: version byte, uvarint n, then n × bytes (an
// encoded record, with its own CRC).

// maxSegmentRecords bounds n (the finished set is a bitmap of n bits).
const maxSegmentRecords = 1 << 20

func encodeSegment(vals [][]byte) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, v := range vals {
		n += len(v) + binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = append(b, segmentV1)
	b = binary.AppendUvarint(b, uint64(len(vals)))
	for _, v := range vals {
		b = appendBytes(b, v)
	}
	return b
}

// segmentCount reads a segment's record count.
func segmentCount(v []byte) (int, error) {
	if len(v) < 2 || v[0] != segmentV1 {
		return 0, corruptf("segment: bad version")
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || n == 0 || n > maxSegmentRecords {
		return 0, corruptf("segment: bad count")
	}
	return int(n), nil
}

// parseSegment splits a segment into its n record values (slices of v).
// When the framing is damaged, the records after the damage are nil: their
// bytes cannot be told apart (tail holds them, for quarantine).
func parseSegment(v []byte) (n int, recs [][]byte, tail []byte, err error) {
	n, err = segmentCount(v)
	if err != nil {
		return 0, nil, v, err
	}
	d := decoder{b: v[1:]}
	d.uvarint("count")
	recs = make([][]byte, n)
	for i := range n {
		r := d.bytes("segment record")
		if d.err != nil {
			return n, recs, v, d.err
		}
		recs[i] = r
	}
	if len(d.b) != 0 {
		return n, recs, d.b, corruptf("segment: %d trailing bytes", len(d.b))
	}
	return n, recs, nil, nil
}

// segState is the finished set of a segment some of whose records are
// final.
type segState struct {
	n    int
	done []uint64 // bitmap: record i (Seq first+i) is final
	left int      // records not final
}

func newSegState(n int) *segState {
	return &segState{n: n, done: make([]uint64, (n+63)/64), left: n}
}

func (s *segState) clone() *segState {
	c := *s
	c.done = append([]uint64(nil), s.done...)
	return &c
}

func (s *segState) isDone(i int) bool { return i >= 0 && i < s.n && s.done[i/64]&(1<<(i%64)) != 0 }

// finish marks record i final; false if it already was (or is out of range).
func (s *segState) finish(i int) bool {
	if i < 0 || i >= s.n || s.isDone(i) {
		return false
	}
	s.done[i/64] |= 1 << (i % 64)
	s.left--
	return true
}

// Finished set value: version byte, uvarint n, then the bitmap as uint64
// little-endian words.

const segDoneV1 byte = 1

func encodeSegState(s *segState) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+8*len(s.done))
	b = append(b, segDoneV1)
	b = binary.AppendUvarint(b, uint64(s.n))
	for _, w := range s.done {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
}

func decodeSegState(v []byte) (*segState, error) {
	if len(v) < 2 || v[0] != segDoneV1 {
		return nil, corruptf("finished set: bad version")
	}
	n, k := binary.Uvarint(v[1:])
	if k <= 0 || n == 0 || n > maxSegmentRecords {
		return nil, corruptf("finished set: bad count")
	}
	rest := v[1+k:]
	s := newSegState(int(n))
	if len(rest) != 8*len(s.done) {
		return nil, corruptf("finished set: %d bytes for %d records", len(rest), n)
	}
	done := 0
	for i := range s.done {
		s.done[i] = binary.LittleEndian.Uint64(rest[8*i:])
		done += bits.OnesCount64(s.done[i])
	}
	s.left = s.n - done
	return s, nil
}

// liveRec is one queued record met by scanLive: its Seq, its stored value
// (valid during the callback only), its retry state if any, and where it is.
type liveRec struct {
	seq   uint64
	value []byte
	retry []byte // mutable section written by Nack, nil if none
	loc   recLoc
	key   []byte // the Badger key holding it (segment or single)
	index int    // index in the segment
	span  int    // records of the segment this value stands for (more than 1 when the framing is damaged)
	err   error  // the value is damaged (value is what could be cut out, maybe nil)
}

// doneFunc tells whether record index i of segment (p, first) is final.
type doneFunc func(first uint64, i int) bool

// scanLive calls fn for partition p's queued records with Seq >= from, in
// Seq order, segments and single records merged, final records skipped,
// retry state attached, until fn returns false. Damaged values are passed
// with err set. A damaged segment framing yields one liveRec for the rest
// of the segment (index = first record lost).
func scanLive(txn *badger.Txn, p int, from uint64, done doneFunc, fn func(*liveRec) bool) error {
	return scanLiveCached(txn, p, from, done, nil, nil, fn)
}

// cachedSeg is a parsed copy of a stored segment whose framing is sound:
// recs[i] is the value of record first+i. It is never changed once made.
type cachedSeg struct {
	first uint64
	key   []byte
	recs  [][]byte
	size  int // bytes of the segment's value
}

// holds reports whether seq is a record of c.
func (c *cachedSeg) holds(seq uint64) bool {
	return c != nil && seq >= c.first && seq-c.first < uint64(len(c.recs))
}

// scanLiveCached is scanLive with a segment already read: when hit (if not
// nil) is still stored in txn's view and holds `from`, the scan starts in it
// without positioning a Badger iterator on it (Badger copies every value
// an iterator is positioned on, so many small reads of a big segment would
// copy it again and again). keep, if not nil, is given each sound segment
// the scan loads from Badger (a private copy, fit to be hit later).
func scanLiveCached(txn *badger.Txn, p int, from uint64, done doneFunc, hit *cachedSeg, keep func(*cachedSeg), fn func(*liveRec) bool) error {
	if from == 0 {
		from = 1
	}
	var segIt *badger.Iterator // opened when the scan goes past hit
	defer func() {
		if segIt != nil {
			segIt.Close()
		}
	}()
	sinIt := txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefixQueue, p)})
	defer sinIt.Close()
	retIt := txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefixRetry, p)})
	defer retIt.Close()

	// Current segment, parsed.
	var (
		cur      [][]byte
		curFirst uint64
		curN     int
		curIdx   int
		curKey   []byte
		curTail  []byte
		curErr   error
	)
	start := from
	if hit.holds(from) {
		cur, curFirst, curN, curIdx, curKey = hit.recs, hit.first, len(hit.recs), int(from-hit.first), hit.key
		start = hit.first + uint64(len(hit.recs))
	} else {
		// The segment holding `from` starts at or before it: find it with
		// a reverse seek.
		rev := txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefixSeg, p), Reverse: true})
		rev.Seek(segKey(p, from))
		if rev.Valid() {
			if _, _, first, ok := parseSeqKey(rev.Item().Key()); ok {
				start = first
			}
		}
		rev.Close()
	}
	sinIt.Seek(seqKey(prefixQueue, p, from))
	retIt.Seek(retryKey(p, from))

	loadSeg := func() bool {
		if segIt == nil {
			segIt = txn.NewIterator(badger.IteratorOptions{Prefix: partPrefix(prefixSeg, p)})
			segIt.Seek(segKey(p, start))
		}
		for segIt.Valid() {
			// Items and their values are valid until Next: copy.
			item := segIt.Item()
			key := item.KeyCopy(nil)
			_, _, first, ok := parseSeqKey(key)
			if !ok || first == 0 {
				segIt.Next()
				continue
			}
			v, err := item.ValueCopy(nil)
			segIt.Next()
			if err != nil {
				curErr = fmt.Errorf("buffer: read segment: %w", err)
				return false
			}
			n, recs, tail, err := parseSegment(v)
			cur, curFirst, curN, curIdx, curKey, curTail = recs, first, n, 0, key, tail
			if err != nil && n == 0 {
				// Not even a count: the whole value is one damaged record.
				cur, curN, curTail = nil, 1, v
			}
			if err == nil && keep != nil {
				keep(&cachedSeg{first: first, key: key, recs: recs, size: len(v)})
			}
			return true
		}
		cur, curN = nil, 0
		return false
	}
	// nextSeg returns the next live record from segments, or nil.
	var pendSeg *liveRec
	nextSeg := func() (*liveRec, error) {
		for {
			if curErr != nil {
				return nil, curErr
			}
			for curIdx < curN {
				i := curIdx
				curIdx++
				seq := curFirst + uint64(i)
				if seq < from || done(curFirst, i) {
					continue
				}
				lr := &liveRec{seq: seq, loc: recLoc{seg: curFirst, n: uint32(curN)}, key: curKey, index: i, span: 1}
				if i < len(cur) && cur[i] != nil {
					lr.value = cur[i]
					lr.loc.size = int64(len(cur[i]))
				} else {
					lr.value, lr.err, lr.span = curTail, corruptf("segment framing damaged"), curN-i
					curIdx = curN // the rest is one damaged blob
					curTail = nil
				}
				return lr, nil
			}
			if !loadSeg() {
				return nil, curErr
			}
		}
	}
	nextSingle := func() (*liveRec, error) {
		for sinIt.Valid() {
			item := sinIt.Item()
			_, _, seq, ok := parseSeqKey(item.Key())
			key := item.KeyCopy(nil)
			if !ok || seq == 0 {
				sinIt.Next()
				if !ok {
					return &liveRec{key: key, err: corruptf("malformed queue key")}, nil
				}
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return nil, fmt.Errorf("buffer: read partition %d: %w", p, err)
			}
			sinIt.Next()
			return &liveRec{seq: seq, value: v, key: key, loc: recLoc{size: int64(len(v))}}, nil
		}
		return nil, nil
	}
	var pendSin *liveRec
	for {
		var err error
		if pendSeg == nil {
			if pendSeg, err = nextSeg(); err != nil {
				return err
			}
		}
		if pendSin == nil {
			if pendSin, err = nextSingle(); err != nil {
				return err
			}
		}
		var lr *liveRec
		switch {
		case pendSeg == nil && pendSin == nil:
			return nil
		case pendSin != nil && (pendSin.seq == 0 && pendSin.err != nil):
			lr, pendSin = pendSin, nil // malformed key: report at once
		case pendSeg == nil || (pendSin != nil && pendSin.seq < pendSeg.seq):
			lr, pendSin = pendSin, nil
		default:
			lr, pendSeg = pendSeg, nil
		}
		if lr.err == nil && lr.seq > 0 {
			for retIt.Valid() {
				_, _, rs, ok := parseSeqKey(retIt.Item().Key())
				if !ok || rs < lr.seq {
					retIt.Next()
					continue
				}
				if rs == lr.seq {
					var err error
					if lr.retry, err = retIt.Item().ValueCopy(nil); err != nil {
						return fmt.Errorf("buffer: read retry state: %w", err)
					}
				}
				break
			}
		}
		if !fn(lr) {
			return nil
		}
	}
}

// decodeMutable decodes a retry state value (a record's mutable section,
// with its length prefix).
func decodeMutable(v []byte) (attempts int, next int64, lastErr string, err error) {
	d := decoder{b: v}
	m := decoder{b: d.bytes("retry state")}
	attempts = m.int("attempts")
	next = m.varint("next attempt")
	lastErr = m.string("last error")
	if d.err != nil || m.err != nil || len(d.b) != 0 {
		return 0, 0, "", corruptf("retry state")
	}
	return attempts, next, lastErr, nil
}

// encodeRetry is the retry state value of a record.
func encodeRetry(attempts int, nextNano int64, lastErr string) []byte {
	return appendMutable(nil, attempts, fromUnixNano(nextNano), lastErr)
}

// liveRecord decodes lr into a Record (with its retry state applied).
func liveRecord(lr *liveRec, p int, body bool) (*Record, error) {
	rec, err := decodeRecord(lr.value, p, lr.seq, body)
	if err != nil {
		return nil, err
	}
	if lr.retry != nil {
		a, next, le, err := decodeMutable(lr.retry)
		if err == nil {
			rec.Attempts, rec.NextAttemptAt, rec.LastError = a, fromUnixNano(next), le
		}
	}
	rec.loc = lr.loc
	return rec, nil
}

// liveValue is lr's record value with its retry state applied (a copy).
func liveValue(lr *liveRec) ([]byte, error) {
	if lr.retry == nil {
		return append([]byte(nil), lr.value...), nil
	}
	a, next, le, err := decodeMutable(lr.retry)
	if err != nil {
		return append([]byte(nil), lr.value...), nil
	}
	return withMutable(lr.value, a, fromUnixNano(next), le)
}
