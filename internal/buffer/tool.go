package buffer

import (
	"bufio"
	"bytes"
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
					corrupt = append(corrupt, corruptValue{item.KeyCopy(nil), bytes.Clone(v), err})
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
					pr := part(p)
					if k[0] == prefixDead {
						if _, _, err := decodeDead(v, p, seq, false); err != nil {
							pr.Corrupt++
							bad(err)
							return nil
						}
						pr.DeadLetters++
						lastSeqs[p] = max(lastSeqs[p], seq)
						return nil
					}
					rec, err := decodeRecord(v, p, seq, false)
					if err != nil {
						pr.Corrupt++
						bad(err)
						return nil
					}
					pr.Records++
					pr.Bytes += int64(len(v))
					if pr.FirstSeq == 0 {
						pr.FirstSeq, pr.Oldest = seq, rec.ReceivedAt
						heads[p] = seq
					}
					pr.LastSeq = seq
					lastSeqs[p] = max(lastSeqs[p], seq)
				case prefixParked:
					if len(k) >= 3 {
						part(int(k[1])<<8|int(k[2])).Parked++
					}
				case prefixOutcome:
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
	rep.Corrupt = len(corrupt)
	rep.Quarantined += len(corrupt)

	// Quarantine, and repair counters that disagree with what is stored.
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	for _, c := range corrupt {
		if err := wb.Set(quarantineKey(c.key), c.value); err != nil {
			return rep, fmt.Errorf("buffer: check: quarantine: %w", err)
		}
		if err := wb.Delete(c.key); err != nil {
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
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixQueue}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			_, p, seq, ok := parseSeqKey(item.Key())
			if !ok {
				skipped++
				continue
			}
			if seq == 0 {
				continue // reclaim marker
			}
			var rec *Record
			if err := item.Value(func(v []byte) error {
				var derr error
				rec, derr = decodeRecord(v, p, seq, true)
				return derr
			}); err != nil {
				if errors.Is(err, errCorrupt) {
					skipped++
					continue
				}
				return fmt.Errorf("buffer: export: read: %w", err)
			}
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
