package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier is what a pgTx runs its statements on: a transaction (Update), or
// a connection whose statements each see the data committed when they run
// (View).
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgTx is one transaction. It remembers the first database error, so that
// a retryable failure is retried even when fn turned it into another error.
type pgTx struct {
	ctx   context.Context
	tx    querier
	first error
}

// note records err (the first one) and returns it.
func (t *pgTx) note(err error) error {
	if err != nil && !errors.Is(err, pgx.ErrNoRows) && t.first == nil {
		t.first = err
	}
	return err
}

// err is the error of a transaction whose fn returned fnErr: a retryable
// database error met on the way wins, since it is why fn failed.
func (t *pgTx) err(fnErr error) error {
	if t.first != nil && retryable(t.first) {
		return t.first
	}
	return dbErr(t.ctx, fnErr)
}

// scanPage is how many rows Scan reads at a time: fn runs between pages,
// so it may use the transaction itself.
const scanPage = 256

func (t *pgTx) Get(key []byte) ([]byte, error) {
	var v []byte
	err := t.note(t.tx.QueryRow(t.ctx, `SELECT v FROM kv WHERE k = $1 AND (expires_at IS NULL OR expires_at > now())`, key).Scan(&v))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return v, dbErr(t.ctx, err)
}

func (t *pgTx) Set(key, value []byte, ttl time.Duration) error {
	var exp *time.Time
	if ttl > 0 {
		e := time.Now().Add(ttl)
		exp = &e
	}
	if value == nil {
		value = []byte{}
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO kv (k, v, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at`, key, value, exp)
	return dbErr(t.ctx, t.note(err))
}

func (t *pgTx) Delete(key []byte) error {
	_, err := t.tx.Exec(t.ctx, `DELETE FROM kv WHERE k = $1`, key)
	return dbErr(t.ctx, t.note(err))
}

func (t *pgTx) Scan(prefix, from []byte, fn func(key, value []byte) (bool, error)) error {
	start := prefix
	if from != nil && bytes.Compare(from, prefix) > 0 {
		start = from
	}
	end := prefixEnd(prefix)
	for {
		rows, err := t.tx.Query(t.ctx, `SELECT k, v FROM kv WHERE k >= $1 AND ($2::BYTEA IS NULL OR k < $2)
			AND (expires_at IS NULL OR expires_at > now()) ORDER BY k LIMIT `+fmt.Sprint(scanPage), start, end)
		if err != nil {
			return dbErr(t.ctx, t.note(err))
		}
		type kv struct{ k, v []byte }
		var page []kv
		for rows.Next() {
			var r kv
			if err := rows.Scan(&r.k, &r.v); err != nil {
				rows.Close()
				return dbErr(t.ctx, t.note(err))
			}
			page = append(page, r)
		}
		if err := rows.Err(); err != nil {
			return dbErr(t.ctx, t.note(err))
		}
		for _, r := range page {
			more, err := fn(r.k, r.v)
			if err != nil || !more {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		start = append(page[len(page)-1].k, 0) // just after the last key
	}
}

// prefixEnd is the least key greater than every key with prefix; nil when
// there is none (a prefix of 0xff bytes only).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

const processCols = `id, owner, last_seq, last_event_type, last_event_at, jobs, created_at, updated_at`

func scanProcess(row pgx.Row) (store.ProcessRecord, error) {
	var p store.ProcessRecord
	var lastSeq, jobs int64
	err := row.Scan(&p.ID, &p.Owner, &lastSeq, &p.LastEventType, &p.LastEventAt, &jobs, &p.CreatedAt, &p.UpdatedAt)
	p.LastSeq, p.Jobs = uint64(lastSeq), uint64(jobs)
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	if p.LastEventAt != nil {
		at := p.LastEventAt.UTC()
		p.LastEventAt = &at
	}
	return p, err
}

func (t *pgTx) Process(pid string) (store.ProcessRecord, error) {
	p, err := scanProcess(t.tx.QueryRow(t.ctx, `SELECT `+processCols+` FROM processes WHERE id = $1`, pid))
	return p, dbErr(t.ctx, t.note(err))
}

func (t *pgTx) Processes(after, owner string, limit int) ([]store.ProcessRecord, error) {
	out := []store.ProcessRecord{}
	if limit <= 0 {
		return out, nil
	}
	rows, err := t.tx.Query(t.ctx, `SELECT `+processCols+` FROM processes
		WHERE id > $1 AND ($2 = '' OR owner = $2) ORDER BY id LIMIT $3`, after, owner, limit)
	if err != nil {
		return nil, dbErr(t.ctx, t.note(err))
	}
	defer rows.Close()
	for rows.Next() {
		p, err := scanProcess(rows)
		if err != nil {
			return nil, dbErr(t.ctx, t.note(err))
		}
		out = append(out, p)
	}
	return out, dbErr(t.ctx, t.note(rows.Err()))
}

func (t *pgTx) AppendEvent(ev *store.Event, owner, dedup string) (store.ProcessRecord, error) {
	if dedup == "" {
		dedup = "id:" + ev.ID
	}
	var seq int64
	err := t.note(t.tx.QueryRow(t.ctx, `SELECT seq FROM events WHERE process_id = $1 AND dedup = $2`, ev.ProcessID, dedup).Scan(&seq))
	if err == nil {
		return store.ProcessRecord{}, store.ErrDuplicate
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return store.ProcessRecord{}, dbErr(t.ctx, err)
	}
	at := ev.CreatedAt
	// One statement: the process row's last_seq goes up by one (its row
	// lock orders concurrent appends) and the event takes that number.
	p, err := scanProcess(t.tx.QueryRow(t.ctx, `WITH p AS (
			INSERT INTO processes (id, owner, last_seq, last_event_type, last_event_at, jobs, created_at, updated_at)
			VALUES ($1, $2, 1, $3, $4, 0, $4, $4)
			ON CONFLICT (id) DO UPDATE SET last_seq = processes.last_seq + 1, last_event_type = excluded.last_event_type,
				last_event_at = excluded.last_event_at, updated_at = excluded.updated_at
			RETURNING `+processCols+`
		), e AS (
			INSERT INTO events (process_id, seq, id, type, data, request_id, job_id, dedup, created_at)
			SELECT id, last_seq, $5, $3, $6, $7, $8, $9, $4 FROM p
		)
		SELECT `+processCols+` FROM p`,
		ev.ProcessID, owner, ev.Type, at, ev.ID, []byte(ev.Data), ev.RequestID, ev.JobID, dedup))
	if err != nil {
		return p, dbErr(t.ctx, t.note(err))
	}
	ev.Seq = p.LastSeq
	return p, nil
}

const eventCols = `process_id, seq, id::TEXT, type, data, request_id, job_id, created_at`

func scanEvent(row pgx.Row) (store.Event, error) {
	var ev store.Event
	var seq int64
	var data []byte
	err := row.Scan(&ev.ProcessID, &seq, &ev.ID, &ev.Type, &data, &ev.RequestID, &ev.JobID, &ev.CreatedAt)
	ev.Seq, ev.Data, ev.CreatedAt = uint64(seq), json.RawMessage(data), ev.CreatedAt.UTC()
	return ev, err
}

func (t *pgTx) Event(pid string, seq uint64) (store.Event, error) {
	ev, err := scanEvent(t.tx.QueryRow(t.ctx, `SELECT `+eventCols+` FROM events WHERE process_id = $1 AND seq = $2`, pid, int64(seq)))
	return ev, dbErr(t.ctx, t.note(err))
}

func (t *pgTx) Events(pid string, after uint64, limit int) ([]store.Event, error) {
	out := []store.Event{}
	if limit <= 0 {
		return out, nil
	}
	rows, err := t.tx.Query(t.ctx, `SELECT `+eventCols+` FROM events WHERE process_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
		pid, int64(after), limit)
	if err != nil {
		return nil, dbErr(t.ctx, t.note(err))
	}
	defer rows.Close()
	for rows.Next() {
		ev, err := scanEvent(rows)
		if err != nil {
			return nil, dbErr(t.ctx, t.note(err))
		}
		out = append(out, ev)
	}
	return out, dbErr(t.ctx, t.note(rows.Err()))
}

func (t *pgTx) NextJob(pid, owner string, now time.Time) (store.ProcessRecord, error) {
	p, err := scanProcess(t.tx.QueryRow(t.ctx, `INSERT INTO processes (id, owner, last_seq, jobs, created_at, updated_at)
		VALUES ($1, $2, 0, 1, $3, $3)
		ON CONFLICT (id) DO UPDATE SET jobs = processes.jobs + 1, updated_at = excluded.updated_at
		RETURNING `+processCols, pid, owner, now))
	return p, dbErr(t.ctx, t.note(err))
}

func (t *pgTx) Partitioning() (store.Partitioning, error) {
	var p store.Partitioning
	var epoch int64
	err := t.note(t.tx.QueryRow(t.ctx, `SELECT count, epoch FROM partitioning WHERE id = 1`).Scan(&p.Count, &epoch))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Partitioning{}, nil
	}
	p.Epoch = uint64(epoch)
	return p, dbErr(t.ctx, err)
}
