package badgerstore

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
)

// Process logs on keys (store/keys.go): p/<pid> holds the summary and the
// counters, e/<pid>\x00<seq> each event, ed/<pid>\x00<dedup> the seq an
// append's dedup name took. The single committer runs every Update in
// order, so reading the counter and writing the next seq never race.

func (t *badgerTx) Process(pid string) (store.ProcessRecord, error) {
	var p store.ProcessRecord
	err := store.GetJSON(t, store.Key(store.PfxProcess, pid), &p)
	return p, err
}

func (t *badgerTx) Processes(after, owner string, limit int) ([]store.ProcessRecord, error) {
	var from []byte
	if after != "" {
		from = append(store.Key(store.PfxProcess, after), 0)
	}
	out := []store.ProcessRecord{}
	err := t.Scan([]byte(store.PfxProcess), from, func(k, v []byte) (bool, error) {
		var p store.ProcessRecord
		if err := store.DecodeJSON(k, v, &p); err != nil {
			return false, err
		}
		if owner == "" || p.Owner == owner {
			out = append(out, p)
		}
		return len(out) < limit, nil
	})
	return out, err
}

// process returns pid's record, or a fresh one owned by owner.
func (t *badgerTx) process(pid, owner string, now time.Time) (store.ProcessRecord, error) {
	p, err := t.Process(pid)
	if errors.Is(err, store.ErrNotFound) {
		return store.ProcessRecord{ID: pid, Owner: owner, CreatedAt: now}, nil
	}
	return p, err
}

func (t *badgerTx) AppendEvent(ev *store.Event, owner, dedup string) (store.ProcessRecord, error) {
	pid := ev.ProcessID
	dk := store.Key(store.PfxEventDedup, pid, dedup)
	if dedup != "" {
		if found, err := store.Exists(t, dk); err != nil || found {
			if err == nil {
				err = store.ErrDuplicate
			}
			return store.ProcessRecord{}, err
		}
	}
	p, err := t.process(pid, owner, ev.CreatedAt)
	if err != nil {
		return p, err
	}
	p.LastSeq++
	ev.Seq = p.LastSeq
	if err := store.PutJSON(t, store.SeqKey(store.PfxEvent, pid, ev.Seq), ev); err != nil {
		return p, err
	}
	if dedup != "" {
		if err := t.Set(dk, binary.BigEndian.AppendUint64(nil, ev.Seq), 0); err != nil {
			return p, err
		}
	}
	at := ev.CreatedAt
	p.LastEventType, p.LastEventAt, p.UpdatedAt = ev.Type, &at, at
	return p, store.PutJSON(t, store.Key(store.PfxProcess, pid), p)
}

func (t *badgerTx) Event(pid string, seq uint64) (store.Event, error) {
	var ev store.Event
	err := store.GetJSON(t, store.SeqKey(store.PfxEvent, pid, seq), &ev)
	return ev, err
}

func (t *badgerTx) Events(pid string, after uint64, limit int) ([]store.Event, error) {
	out := []store.Event{}
	if limit <= 0 {
		return out, nil
	}
	err := t.Scan(store.SeqPrefix(store.PfxEvent, pid), store.SeqKey(store.PfxEvent, pid, after+1), func(k, v []byte) (bool, error) {
		var ev store.Event
		if err := store.DecodeJSON(k, v, &ev); err != nil {
			return false, err
		}
		out = append(out, ev)
		return len(out) < limit, nil
	})
	return out, err
}

func (t *badgerTx) NextJob(pid, owner string, now time.Time) (store.ProcessRecord, error) {
	p, err := t.process(pid, owner, now)
	if err != nil {
		return p, err
	}
	p.Jobs++
	p.UpdatedAt = now
	return p, store.PutJSON(t, store.Key(store.PfxProcess, pid), p)
}

// Partitioning: an embedded store is one backend's own; it keeps none.
func (t *badgerTx) Partitioning() (store.Partitioning, error) { return store.Partitioning{}, nil }
