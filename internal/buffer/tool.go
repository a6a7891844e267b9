package buffer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// CheckReport is what Check found in a queue directory.
type CheckReport struct {
	Path        string
	Partitions  []PartitionReport // every partition with records, dead letters or counters, by number
	Records     int               // queued records
	Bytes       int64             // their encoded size
	DeadLetters int
	Parked      int       // parked keys
	Outcomes    int       // outcomes kept (not expired)
	Oldest      time.Time // ReceivedAt of the oldest queued record, zero if none
	Corrupt     int       // corrupt values found by this check (now quarantined)
	Quarantined int       // values in quarantine, this check's included
	Problems    []string  // counter mismatches (repaired) and other findings
}

// PartitionReport is one partition of a CheckReport.
type PartitionReport struct {
	Partition   int
	Records     int
	Bytes       int64
	DeadLetters int
	Parked      int
	FirstSeq    uint64 // Seq of the first queued record, 0 if none
	LastSeq     uint64 // Seq of the last queued record, 0 if none
	NextSeq     uint64 // Seq the next Append gets
	Oldest      time.Time
	Corrupt     int
}

// Check verifies the queue in path offline (the edge must not be running:
// Badger's directory lock refuses a second opener). It reads every record,
// dead letter and counter; corrupt values are quarantined and counted;
// counters that disagree with what is stored are rewritten and reported in
// Problems. Unlike Open, Check scans everything.
func Check(path string) (CheckReport, error) {
	rep := CheckReport{Path: path}
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("buffer: check: %w", err)
	}
	if _, err := dropEmptyMemtables(path); err != nil {
		return rep, fmt.Errorf("buffer: check: %w", err)
	}
	db, err := badger.Open(badgerOptions(path, defaultTuning(), slog.New(slog.DiscardHandler), false))
	if err != nil {
		return rep, fmt.Errorf("buffer: check: open %s: %w", path, err)
	}
	defer db.Close()

	parts := map[int]*PartitionReport{}
	part := func(p int) *PartitionReport {
		if pr, ok := parts[p]; ok {
			return pr
		}
		pr := &PartitionReport{Partition: p}
		parts[p] = pr
		return pr
	}
	var (
		corrupt  []corruptValue
		metas    = map[int]partMeta{}
		global   globalMeta
		heads    = map[int]uint64{}
		lastSeqs = map[int]uint64{}
		markers  [][]byte
	)
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if len(k) == 0 {
				continue
			}
			err := item.Value(func(v []byte) error {
				bad := func(err error) {
					corrupt = append(corrupt, corruptValue{key: item.KeyCopy(nil), value: bytes.Clone(v), err: err})
				}
				switch k[0] {
				case prefixQueue, prefixDead:
					_, p, seq, ok := parseSeqKey(k)
					if !ok {
						bad(corruptf("malformed key"))
						return nil
					}
					if seq == 0 {
						// A reclaim marker left by a crash: drop it.
						markers = append(markers, item.KeyCopy(nil))
						return nil
					}
					if k[0] == prefixQueue {
						return nil // counted below, merged with the segments
					}
					pr := part(p)
					if _, _, err := decodeDead(v, p, seq, false); err != nil {
						pr.Corrupt++
						bad(err)
						return nil
					}
					pr.DeadLetters++
					lastSeqs[p] = max(lastSeqs[p], seq)
					return nil
				case prefixSeg:
					if _, _, seq, ok := parseSeqKey(k); ok && seq == 0 {
						markers = append(markers, item.KeyCopy(nil))
					}
				case prefixParked:
					if len(k) >= 3 {
						part(int(k[1])<<8|int(k[2])).Parked++
					}
				case prefixOutcome, prefixOutcomeV1:
					rep.Outcomes++
				case prefixQuarantine:
					rep.Quarantined++
				case prefixMeta:
					if len(k) != 3 {
						return nil
					}
					p := int(k[1])<<8 | int(k[2])
					m, err := decodePartMeta(v)
					if err != nil {
						rep.Problems = append(rep.Problems, fmt.Sprintf("partition %d: unreadable counters (%v), rebuilt", p, err))
						part(p)
						return nil
					}
					metas[p] = m
					part(p).NextSeq = m.NextSeq
				case prefixGlobal:
					if g, err := decodeGlobalMeta(v); err == nil {
						global = g
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("buffer: check: read %x: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	// Queued records, both layouts merged, in Seq order.
	opens := map[int]map[uint64]*segState{}
	err = db.View(func(txn *badger.Txn) error {
		ps, err := storedPartitions(txn)
		if err != nil {
			return err
		}
		for _, p := range ps {
			open, err := loadOpen(txn, p)
			if err != nil {
				return err
			}
			opens[p] = open
			last, err := lastSeq(txn, prefixSeg, p)
			if err != nil {
				return err
			}
			lastSeqs[p] = max(lastSeqs[p], last)
			pr := part(p)
			err = scanLive(txn, p, 1, func(first uint64, i int) bool {
				st := open[first]
				return st != nil && st.isDone(i)
			}, func(lr *liveRec) bool {
				var rec *Record
				if lr.err == nil && lr.seq != 0 {
					rec, lr.err = decodeRecord(lr.value, p, lr.seq, false)
				}
				if lr.err != nil || lr.seq == 0 {
					pr.Corrupt++
					c := corruptOf(p, lr)
					if c.err == nil {
						c.err = corruptf("malformed key")
					}
					corrupt = append(corrupt, c)
					return true
				}
				pr.Records++
				pr.Bytes += int64(len(lr.value))
				if pr.FirstSeq == 0 {
					pr.FirstSeq, pr.Oldest = lr.seq, rec.ReceivedAt
					heads[p] = lr.seq
				}
				pr.LastSeq = lr.seq
				lastSeqs[p] = max(lastSeqs[p], lr.seq)
				return true
			})
			if err != nil {
				return fmt.Errorf("buffer: check: partition %d: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.Corrupt = len(corrupt)
	rep.Quarantined += len(corrupt)

	// Quarantine, and repair counters that disagree with what is stored.
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	touched := map[segID]*segState{}
	for _, c := range corrupt {
		if c.seg != 0 {
			// Records of a segment: set aside, marked final; the rest of
			// the segment stays.
			qk := binary.BigEndian.AppendUint32(quarantineKey(c.key), uint32(c.index))
			if err := wb.Set(qk, c.value); err != nil {
				return rep, fmt.Errorf("buffer: check: quarantine: %w", err)
			}
			sid := segID{c.p, c.seg}
			st := touched[sid]
			if st == nil {
				if o := opens[c.p][c.seg]; o != nil {
					st = o.clone()
				} else {
					n := 1
					_ = db.View(func(txn *badger.Txn) error {
						item, err := txn.Get(c.key)
						if err != nil {
							return err
						}
						return item.Value(func(v []byte) error {
							if k, err := segmentCount(v); err == nil {
								n = k
							}
							return nil
						})
					})
					st = newSegState(n)
				}
				touched[sid] = st
			}
			for i := c.index; i < c.index+max(c.span, 1); i++ {
				st.finish(i)
			}
			continue
		}
		if err := wb.Set(quarantineKey(c.key), c.value); err != nil {
			return rep, fmt.Errorf("buffer: check: quarantine: %w", err)
		}
		if err := wb.Delete(c.key); err != nil {
			return rep, fmt.Errorf("buffer: check: quarantine: %w", err)
		}
	}
	for sid, st := range touched {
		var err error
		if st.left == 0 {
			err = wb.Delete(segKey(sid.p, sid.first))
			if err == nil {
				err = wb.Delete(segDoneKey(sid.p, sid.first))
			}
		} else {
			err = wb.Set(segDoneKey(sid.p, sid.first), encodeSegState(st))
		}
		if err != nil {
			return rep, fmt.Errorf("buffer: check: quarantine: %w", err)
		}
	}
	for _, k := range markers {
		if err := wb.Delete(k); err != nil {
			return rep, fmt.Errorf("buffer: check: %w", err)
		}
	}
	for p, pr := range parts {
		m, had := metas[p]
		want := partMeta{
			NextSeq: max(m.NextSeq, lastSeqs[p]+1, 1),
			Records: int64(pr.Records),
			Bytes:   pr.Bytes,
			Dead:    int64(pr.DeadLetters),
			Head:    heads[p],
		}
		if want.Head == 0 {
			want.Head = want.NextSeq
		}
		pr.NextSeq = want.NextSeq
		if had && m.Records == want.Records && m.Bytes == want.Bytes && m.Dead == want.Dead && m.NextSeq == want.NextSeq {
			continue
		}
		if !had && pr.Records == 0 && pr.DeadLetters == 0 {
			continue
		}
		if had || pr.Records > 0 || pr.DeadLetters > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf(
				"partition %d: counters said %d records, %d bytes, %d dead letters, next seq %d; found %d, %d, %d, %d (rewritten)",
				p, m.Records, m.Bytes, m.Dead, m.NextSeq, want.Records, want.Bytes, want.Dead, want.NextSeq))
		}
		if err := wb.Set(metaKey(p), encodePartMeta(want)); err != nil {
			return rep, fmt.Errorf("buffer: check: repair counters: %w", err)
		}
	}
	if int64(rep.Quarantined) != global.Quarantined {
		if err := wb.Set(globalKey, encodeGlobalMeta(globalMeta{Quarantined: int64(rep.Quarantined)})); err != nil {
			return rep, fmt.Errorf("buffer: check: repair counters: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return rep, fmt.Errorf("buffer: check: write: %w", err)
	}
	if err := db.Sync(); err != nil {
		return rep, fmt.Errorf("buffer: check: sync: %w", err)
	}

	for _, pr := range parts {
		rep.Partitions = append(rep.Partitions, *pr)
		rep.Records += pr.Records
		rep.Bytes += pr.Bytes
		rep.DeadLetters += pr.DeadLetters
		rep.Parked += pr.Parked
		if !pr.Oldest.IsZero() && (rep.Oldest.IsZero() || pr.Oldest.Before(rep.Oldest)) {
			rep.Oldest = pr.Oldest
		}
	}
	sort.Slice(rep.Partitions, func(i, j int) bool { return rep.Partitions[i].Partition < rep.Partitions[j].Partition })
	if err := db.Close(); err != nil {
		return rep, fmt.Errorf("buffer: check: close: %w", err)
	}
	return rep, nil
}

// exportRecord is one line of Export's output.
type exportRecord struct {
	ID             string      `json:"id"`
	Partition      int         `json:"partition"`
	Seq            uint64      `json:"seq"`
	Key            string      `json:"key"`
	IdempotencyKey string      `json:"idempotency_key,omitempty"`
	Method         string      `json:"method"`
	Path           string      `json:"path"`
	Query          string      `json:"query"`
	Headers        http.Header `json:"headers"`
	Body           []byte      `json:"body"` // base64
	ReceivedAt     time.Time   `json:"received_at"`
	Attempts       int         `json:"attempts"`
	NextAttemptAt  *time.Time  `json:"next_attempt_at,omitempty"`
	LastError      string      `json:"last_error,omitempty"`
}

// exportLine writes rec as one NDJSON line.
func exportLine(enc *json.Encoder, rec *Record) error {
	line := exportRecord{
		ID: rec.ID, Partition: rec.Partition, Seq: rec.Seq, Key: rec.Key,
		IdempotencyKey: rec.IdempotencyKey, Method: rec.Method, Path: rec.Path,
		Query: rec.RawQuery, Headers: rec.Header, Body: rec.Body,
		ReceivedAt: rec.ReceivedAt.UTC(), Attempts: rec.Attempts, LastError: rec.LastError,
	}
	if line.Headers == nil {
		line.Headers = http.Header{}
	}
	if line.Body == nil {
		line.Body = []byte{}
	}
	if !rec.NextAttemptAt.IsZero() {
		t := rec.NextAttemptAt.UTC()
		line.NextAttemptAt = &t
	}
	if err := enc.Encode(line); err != nil {
		return fmt.Errorf("buffer: export: write: %w", err)
	}
	return nil
}

// storedPartitions lists the partitions that hold queued records (either
// layout) or counters, in order.
func storedPartitions(txn *badger.Txn) ([]int, error) {
	seen := map[int]bool{}
	for _, prefix := range []byte{prefixQueue, prefixSeg, prefixMeta} {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}, PrefetchValues: false})
		for it.Seek([]byte{prefix}); it.Valid(); {
			k := it.Item().Key()
			if len(k) < 3 {
				it.Next()
				continue
			}
			p := int(k[1])<<8 | int(k[2])
			seen[p] = true
			if p == maxPartitions-1 {
				break
			}
			it.Seek(partPrefix(prefix, p+1)) // next partition
		}
		it.Close()
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out, nil
}

// ErrCorruptSkipped is returned (wrapped) by Export when it skipped corrupt
// records; everything else was written.
var ErrCorruptSkipped = errors.New("buffer: corrupt records skipped")

// Export writes the queued requests of the queue in path to w as NDJSON,
// one JSON object per record (id, partition, seq, key, method, path, query,
// headers, body in base64, received_at, attempts, ...), by partition then
// Seq. It opens the store read-only, so the edge must not be running.
// Corrupt records are skipped and reported with ErrCorruptSkipped.
func Export(path string, w io.Writer) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("buffer: export: %w", err)
	}
	db, err := badger.Open(badgerOptions(path, defaultTuning(), slog.New(slog.DiscardHandler), true))
	if err != nil {
		return fmt.Errorf("buffer: export: open %s: %w", path, err)
	}
	defer db.Close()
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	skipped := 0
	err = db.View(func(txn *badger.Txn) error {
		parts, err := storedPartitions(txn)
		if err != nil {
			return err
		}
		for _, p := range parts {
			open, err := loadOpen(txn, p)
			if err != nil {
				return err
			}
			var werr error
			err = scanLive(txn, p, 1, func(first uint64, i int) bool {
				st := open[first]
				return st != nil && st.isDone(i)
			}, func(lr *liveRec) bool {
				if lr.err != nil || lr.seq == 0 {
					skipped += max(lr.span, 1)
					return true
				}
				rec, err := liveRecord(lr, p, true)
				if err != nil {
					skipped++
					return true
				}
				if werr = exportLine(enc, rec); werr != nil {
					return false
				}
				return true
			})
			if err != nil {
				return fmt.Errorf("buffer: export: read: %w", err)
			}
			if werr != nil {
				return werr
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("buffer: export: write: %w", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("buffer: export: close: %w", err)
	}
	if skipped > 0 {
		return fmt.Errorf("buffer: export: %d records: %w", skipped, ErrCorruptSkipped)
	}
	return nil
}
