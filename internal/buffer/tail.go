package buffer

import "sync"

// The tail is how a delivery loop that keeps up with intake gets new records
// without reading them back from Badger: once a batch of appends is durable,
// the committer's release step copies its records (as Append was given them,
// with their Seq) to their partition's tail, and Read serves a caller whose
// cursor is just before the tail's first record from memory. A caller that is
// behind (a backlog, a restart) reads from Badger as before, and the tail
// only ever holds the newest records, so it cannot grow past its bounds.
//
// Invariant: a tail holds records of consecutive Seqs, all durable, in
// order. A gap (a failed write consumed a Seq) empties it; Read falls back to
// Badger whenever the tail does not start right after the caller's cursor.
const (
	tailMaxRecords = 512     // records kept per partition
	tailMaxBytes   = 1 << 20 // body bytes kept per partition
)

type tail struct {
	mu    sync.Mutex
	recs  []*Record
	bytes int
}

// push adds durable records of one partition, in Seq order.
func (t *tail) push(recs []*Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range recs {
		if n := len(t.recs); n > 0 && t.recs[n-1].Seq+1 != r.Seq {
			t.reset()
		}
		t.recs = append(t.recs, r)
		t.bytes += len(r.Body)
		for len(t.recs) > tailMaxRecords || (t.bytes > tailMaxBytes && len(t.recs) > 1) {
			t.drop(1)
		}
	}
}

// take removes and returns the records after Seq `after`, if the tail starts
// right there: up to max records, stopping before maxBytes of bodies (at
// least one). It returns nil when the caller must read from Badger.
func (t *tail) take(after uint64, max, maxBytes int) []*Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := 0
	for i < len(t.recs) && t.recs[i].Seq <= after {
		i++
	}
	t.drop(i)
	if len(t.recs) == 0 || t.recs[0].Seq != after+1 {
		return nil
	}
	n, total := 0, 0
	for n < len(t.recs) && n < max {
		b := len(t.recs[n].Body)
		if n > 0 && maxBytes > 0 && total+b > maxBytes {
			break
		}
		total += b
		n++
	}
	out := make([]*Record, n)
	copy(out, t.recs[:n])
	t.drop(n)
	return out
}

// drop removes the first n records.
func (t *tail) drop(n int) {
	if n == 0 {
		return
	}
	for _, r := range t.recs[:n] {
		t.bytes -= len(r.Body)
	}
	clear(t.recs[:n])
	t.recs = t.recs[n:]
	if len(t.recs) == 0 {
		t.recs = t.recs[:0:0] // let the backing array go
	}
}

func (t *tail) reset() { t.drop(len(t.recs)) }

// forget empties the tail if it may hold an older copy of Seq seq (changed
// by an ack, nack, dead letter or replay since it was published). A loop
// takes records from the tail before it acts on them, so this is rare.
func (t *tail) forget(seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.recs); n > 0 && seq >= t.recs[0].Seq && seq <= t.recs[n-1].Seq {
		t.reset()
	}
}

// publishTail copies the records of a durable flight's appends to their
// partitions' tails, and drops tails that may hold older copies of records
// the flight changed. It runs before the flight's records become readable
// (the durable marks advance after it), so no record is read from Badger
// before its copy is in the tail. The records are shallow copies of what Append was given
// (Append's caller does not change a record after Append), carrying their Seq.
func (q *queue) publishTail(f *flight) {
	var byPart map[int][]*Record
	for _, s := range f.done {
		for _, o := range s.ops {
			if o.err != nil {
				continue
			}
			switch o.kind {
			case opAck, opNack, opDead:
				q.tails[o.p].forget(o.seq)
				continue
			case opReplay:
				if o.replayed != nil {
					q.tails[o.replayed.Partition].forget(o.replayed.Seq)
				}
				continue
			case opAppend:
			default:
				continue
			}
			for i, it := range o.items {
				if it.rec == nil || o.results[i].Duplicate || o.results[i].Conflict {
					continue
				}
				c := *it.rec
				c.Seq = o.seqs[i]
				c.loc = o.locs[i]
				c.ReceivedAt = it.received
				if byPart == nil {
					byPart = map[int][]*Record{}
				}
				byPart[it.p] = append(byPart[it.p], &c)
			}
		}
	}
	for p, recs := range byPart {
		q.tails[p].push(recs)
	}
}
