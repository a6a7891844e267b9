package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/partition"
)

// Process is the state summary of GET /api/v1/processes/{pid}.
type Process struct {
	ID            string     `json:"id"`
	Partition     int        `json:"partition"`
	Events        uint64     `json:"events"`   // events appended (= the last sequence number)
	LastSeq       uint64     `json:"last_seq"` // sequence number of the newest event, 0 if none
	LastEventType string     `json:"last_event_type,omitempty"`
	LastEventAt   *time.Time `json:"last_event_at,omitempty"`
	Jobs          uint64     `json:"jobs"`                  // jobs submitted
	RunningJob    string     `json:"running_job,omitempty"` // the job running now, if any
	QueuedJobs    int        `json:"queued_jobs"`           // jobs waiting behind it
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// eventBody checks an event body (any JSON value) and returns it compacted
// with its "type" member.
func eventBody(body []byte) (json.RawMessage, string, error) {
	var buf bytes.Buffer
	buf.Grow(len(body))
	if err := json.Compact(&buf, body); err != nil { // Compact validates as it goes
		return nil, "", badRequest("the event body must be a JSON document")
	}
	var head struct {
		Type any `json:"type"`
	}
	typ := ""
	if json.Unmarshal(buf.Bytes(), &head) == nil {
		if t, ok := head.Type.(string); ok {
			if len(t) > 200 || !utf8.ValidString(t) {
				return nil, "", badRequest("type: at most 200 bytes of UTF-8")
			}
			typ = t
		}
	}
	return buf.Bytes(), typ, nil
}

func eventPath(pid string, seq uint64) string {
	return fmt.Sprintf("/api/v1/processes/%s/events/%d", url.PathEscape(pid), seq)
}

// processVisible reports whether key k may read and write process p: its
// owner's keys and admin keys may.
func processVisible(p store.ProcessRecord, k *APIKey) bool {
	return k.Role == RoleAdmin || (p.Owner != "" && p.Owner == k.user())
}

// visibleProcess returns pid's record, or a 404 when it does not exist or
// the caller may not see it (to whom it does not exist).
func visibleProcess(tx Tx, c *call, pid string) (store.ProcessRecord, error) {
	p, err := tx.Process(pid)
	if errors.Is(err, ErrNotFound) || (err == nil && !processVisible(p, c.key)) {
		return p, notFound("no process %q", pid)
	}
	return p, err
}

// appendEvent: POST /api/v1/processes/{pid}/events → 201 Event. The first
// append creates the process, owned by the caller's user; appends by
// others who may not see it are 404s.
func (s *Server) appendEvent(c *call, tx Tx) (result, error) {
	pid := c.r.PathValue("pid")
	data, typ, err := eventBody(c.body)
	if err != nil {
		return result{}, err
	}
	ev, err := s.appendEventTx(tx, c, pid, typ, data)
	if err != nil {
		return result{}, err
	}
	res, _ := created(ev, eventPath(pid, ev.Seq))
	res.after = s.metrics.events.Inc
	return res, nil
}

// appendEventTx appends one event of the request c to pid's log, after
// checking, in the same transaction, that this partition owns pid under
// the stored partitioning and that the caller may write to the process.
func (s *Server) appendEventTx(tx Tx, c *call, pid, typ string, data json.RawMessage) (Event, error) {
	if err := s.checkOwnerTx(tx, pid); err != nil {
		return Event{}, err
	}
	ev := Event{ProcessID: pid, ID: store.NewID(), Type: typ, Data: data, RequestID: c.info.id, CreatedAt: time.Now().UTC()}
	p, err := tx.AppendEvent(&ev, c.key.user(), c.info.id)
	if errors.Is(err, store.ErrDuplicate) {
		return Event{}, conflict("request %s already appended an event to process %q", c.info.id, pid)
	}
	if err != nil {
		return Event{}, err
	}
	if !processVisible(p, c.key) { // another user's: the transaction is dropped with this error
		return Event{}, notFound("no process %q", pid)
	}
	return ev, nil
}

// listEvents: GET /api/v1/processes/{pid}/events?cursor=<seq>&limit= —
// events after the cursor, in sequence order.
func (s *Server) listEvents(c *call) (result, error) {
	pid := c.r.PathValue("pid")
	cursor, limit, err := page(c.r)
	if err != nil {
		return result{}, err
	}
	var after uint64
	if cursor != "" {
		if after, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return result{}, badRequest("cursor: want a sequence number, got %q", cursor)
		}
	}
	out := list[Event]{Items: []Event{}}
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		if _, err := visibleProcess(tx, c, pid); err != nil {
			return err
		}
		evs, err := tx.Events(pid, after, limit+1)
		if err != nil {
			return err
		}
		if len(evs) > limit {
			evs = evs[:limit]
			out.NextCursor = strconv.FormatUint(evs[limit-1].Seq, 10)
		}
		out.Items = evs
		return nil
	})
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getEvent: GET /api/v1/processes/{pid}/events/{seq}.
func (s *Server) getEvent(c *call) (result, error) {
	pid := c.r.PathValue("pid")
	seq, err := strconv.ParseUint(c.r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return result{}, badRequest("seq: want a positive integer, got %q", c.r.PathValue("seq"))
	}
	var ev Event
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		if _, err := visibleProcess(tx, c, pid); err != nil {
			return err
		}
		ev, err = tx.Event(pid, seq)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return result{}, notFound("process %q has no event %d", pid, seq)
	}
	if err != nil {
		return result{}, err
	}
	return ok(ev)
}

// processView adds what only memory knows (the job queue) to a record.
func (s *Server) processView(p store.ProcessRecord) Process {
	running, queued := s.runner.ProcessState(p.ID)
	return Process{ID: p.ID, Partition: s.opts.Partition, Events: p.LastSeq, LastSeq: p.LastSeq,
		LastEventType: p.LastEventType, LastEventAt: p.LastEventAt, Jobs: p.Jobs,
		RunningJob: running, QueuedJobs: queued, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

// getProcess: GET /api/v1/processes/{pid} → Process.
func (s *Server) getProcess(c *call) (result, error) {
	pid := c.r.PathValue("pid")
	var p store.ProcessRecord
	err := s.store.View(c.r.Context(), func(tx Tx) error {
		var err error
		p, err = visibleProcess(tx, c, pid)
		return err
	})
	if err != nil {
		return result{}, err
	}
	return ok(s.processView(p))
}

// listProcesses: GET /api/v1/processes?cursor=<pid>&limit= — the processes
// in id order: the caller's own, or all for an admin key. With a shared
// database only those this partition owns are listed.
func (s *Server) listProcesses(c *call) (result, error) {
	cursor, limit, err := page(c.r)
	if err != nil {
		return result{}, err
	}
	if cursor != "" {
		if err := validPID("cursor", cursor); err != nil {
			return result{}, err
		}
	}
	owner := c.key.user()
	if c.key.Role == RoleAdmin {
		owner = ""
	}
	out := list[Process]{Items: []Process{}}
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		part, err := s.partitioning(tx)
		if err != nil {
			return err
		}
		const batch = 256
		var items []store.ProcessRecord
		for after := cursor; ; {
			ps, err := tx.Processes(after, owner, batch)
			if err != nil {
				return err
			}
			for _, p := range ps {
				if partition.OfString(p.ID, part.Count) == s.opts.Partition {
					items = append(items, p)
				}
			}
			if len(ps) < batch || len(items) > limit {
				break
			}
			after = ps[len(ps)-1].ID
		}
		if len(items) > limit {
			items = items[:limit]
			out.NextCursor = items[limit-1].ID
		}
		for _, p := range items {
			out.Items = append(out.Items, s.processView(p))
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	return ok(out)
}
