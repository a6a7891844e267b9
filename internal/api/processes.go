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
	if !json.Valid(body) {
		return nil, "", badRequest("the event body must be a JSON document")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		return nil, "", badRequest("the event body must be a JSON document: %v", err)
	}
	var head struct {
		Type any `json:"type"`
	}
	typ := ""
	if json.Unmarshal(body, &head) == nil {
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

// appendEvent: POST /api/v1/processes/{pid}/events → 201 Event.
func (s *Server) appendEvent(c *call, tx Tx) (result, error) {
	pid := c.r.PathValue("pid")
	data, typ, err := eventBody(c.body)
	if err != nil {
		return result{}, err
	}
	ev, err := store.AppendEvent(tx, pid, typ, data, c.info.id, "", time.Now().UTC())
	if err != nil {
		return result{}, err
	}
	res, _ := created(ev, eventPath(pid, ev.Seq))
	res.after = s.metrics.events.Inc
	return res, nil
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
		if found, err := store.Exists(tx, store.Key(store.PfxProcess, pid)); err != nil || !found {
			if err == nil {
				err = notFound("no process %q", pid)
			}
			return err
		}
		return tx.Scan(store.SeqPrefix(store.PfxEvent, pid), store.SeqKey(store.PfxEvent, pid, after+1), func(k, v []byte) (bool, error) {
			if len(out.Items) == limit {
				out.NextCursor = strconv.FormatUint(out.Items[limit-1].Seq, 10)
				return false, nil
			}
			var ev Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return false, fmt.Errorf("store: decode %q: %w", k, err)
			}
			out.Items = append(out.Items, ev)
			return true, nil
		})
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
	err = s.store.View(c.r.Context(), func(tx Tx) error { return store.GetJSON(tx, store.SeqKey(store.PfxEvent, pid, seq), &ev) })
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
	err := s.store.View(c.r.Context(), func(tx Tx) error { return store.GetJSON(tx, store.Key(store.PfxProcess, pid), &p) })
	if errors.Is(err, ErrNotFound) {
		return result{}, notFound("no process %q", pid)
	}
	if err != nil {
		return result{}, err
	}
	return ok(s.processView(p))
}

// listProcesses: GET /api/v1/processes?cursor=<pid>&limit= — the processes
// of this partition in id order.
func (s *Server) listProcesses(c *call) (result, error) {
	cursor, limit, err := page(c.r)
	if err != nil {
		return result{}, err
	}
	var from []byte
	if cursor != "" {
		if err := validPID("cursor", cursor); err != nil {
			return result{}, err
		}
		from = append(store.Key(store.PfxProcess, cursor), 0)
	}
	out := list[Process]{Items: []Process{}}
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		return tx.Scan([]byte(store.PfxProcess), from, func(k, v []byte) (bool, error) {
			if len(out.Items) == limit {
				out.NextCursor = out.Items[limit-1].ID
				return false, nil
			}
			var p store.ProcessRecord
			if err := json.Unmarshal(v, &p); err != nil {
				return false, fmt.Errorf("store: decode %q: %w", k, err)
			}
			out.Items = append(out.Items, s.processView(p))
			return true, nil
		})
	})
	if err != nil {
		return result{}, err
	}
	return ok(out)
}
