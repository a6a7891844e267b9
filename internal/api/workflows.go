package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/outbound"
)

// Workflow limits.
const (
	maxSteps      = 100
	maxDelayMS    = int64(24 * time.Hour / time.Millisecond)
	maxStepHeader = 20
)

// Workflow is a named, ordered list of steps, optionally owned by an app.
type Workflow struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	AppID     string    `json:"app_id,omitempty"`
	Steps     []Step    `json:"steps"`
	Owner     string    `json:"owner,omitempty"` // user id of the key that created it; "" (stored before owners) means admin keys only
	CreatedAt time.Time `json:"created_at"`
}

type workflowInput struct {
	Name  string `json:"name"`
	AppID string `json:"app_id"`
	Steps []Step `json:"steps"`
}

// validStep checks step i and fills its defaults.
func (s *Server) validStep(i int, st *Step) error {
	f := func(field string) string { return fmt.Sprintf("steps[%d].%s", i, field) }
	switch st.Type {
	case StepDelay:
		if st.MS < 0 || st.MS > maxDelayMS {
			return badRequest("%s: want 0 to %d milliseconds, got %d", f("ms"), maxDelayMS, st.MS)
		}
		if st.EventType != "" || st.Data != nil || st.Method != "" || st.URL != "" || st.Body != nil || st.Headers != nil {
			return badRequest("steps[%d]: a delay step takes only ms", i)
		}
	case StepEvent:
		if st.MS != 0 || st.Method != "" || st.URL != "" || st.Body != nil || st.Headers != nil {
			return badRequest("steps[%d]: an event step takes only event_type and data", i)
		}
		if len(st.EventType) > 200 {
			return badRequest("%s: at most 200 bytes", f("event_type"))
		}
		if st.EventType == "" {
			st.EventType = "workflow.step"
		}
	case StepHTTP:
		if st.MS != 0 || st.EventType != "" || st.Data != nil {
			return badRequest("steps[%d]: an http step takes only method, url, body and headers", i)
		}
		st.Method = strings.ToUpper(st.Method)
		switch st.Method {
		case "":
			st.Method = http.MethodPost
		case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		default:
			return badRequest("%s: want GET, POST, PUT, PATCH or DELETE, got %q", f("method"), st.Method)
		}
		if err := outbound.CheckURL(st.URL, s.opts.Production); err != nil {
			return badRequest("%s: %v", f("url"), err)
		}
		if len(st.Headers) > maxStepHeader {
			return badRequest("%s: at most %d headers", f("headers"), maxStepHeader)
		}
		for k, v := range st.Headers {
			if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
				return badRequest("%s: invalid header %q", f("headers"), k)
			}
			switch http.CanonicalHeaderKey(k) {
			case "Host", "Content-Length", "Connection", "Transfer-Encoding", "Te", "Upgrade", "Idempotency-Key":
				return badRequest("%s: %s cannot be set", f("headers"), k)
			}
		}
	default:
		return badRequest("%s: want %q, %q or %q, got %q", f("type"), StepDelay, StepEvent, StepHTTP, st.Type)
	}
	return nil
}

// createWorkflow: POST /api/v1/workflows {name, app_id, steps} → 201.
func (s *Server) createWorkflow(c *call, tx Tx) (result, error) {
	var in workflowInput
	if err := decodeJSON(c.body, &in); err != nil {
		return result{}, err
	}
	name, err := s.cleanName("name", in.Name)
	if err != nil {
		return result{}, err
	}
	if len(in.Steps) == 0 || len(in.Steps) > maxSteps {
		return result{}, badRequest("steps: want 1 to %d steps, got %d", maxSteps, len(in.Steps))
	}
	for i := range in.Steps {
		if err := s.validStep(i, &in.Steps[i]); err != nil {
			return result{}, err
		}
	}
	if in.AppID != "" {
		if err := validUUID("app_id", in.AppID); err != nil {
			return result{}, err
		}
		var a App
		if err := store.GetJSON(tx, store.Key(store.PfxApp, in.AppID), &a); errors.Is(err, ErrNotFound) || (err == nil && !ownedBy(a.Owner, c.key)) {
			return result{}, unprocessable("app_id: no app %s", in.AppID)
		} else if err != nil {
			return result{}, err
		}
		// Written back unchanged: a concurrent deleteApp, which read that
		// the app owns no workflow, now conflicts with this transaction
		// instead of leaving a workflow in a deleted app.
		if err := store.PutJSON(tx, store.Key(store.PfxApp, a.ID), a); err != nil {
			return result{}, err
		}
	}
	w := Workflow{ID: store.NewID(), Name: name, AppID: in.AppID, Steps: in.Steps, Owner: c.key.user(), CreatedAt: time.Now().UTC()}
	if err := store.PutJSON(tx, store.Key(store.PfxWorkflow, w.ID), w); err != nil {
		return result{}, err
	}
	if w.AppID != "" {
		if err := tx.Set(store.Key(store.PfxAppWorkflow, w.AppID, w.ID), nil, 0); err != nil {
			return result{}, err
		}
	}
	return created(w, "/api/v1/workflows/"+w.ID)
}

// listWorkflows: GET /api/v1/workflows, oldest first: the caller's (all
// for an admin key).
func (s *Server) listWorkflows(c *call) (result, error) {
	out, err := listRecordsWhere(c.r, s.store, store.PfxWorkflow, func(w Workflow) bool { return ownedBy(w.Owner, c.key) }, func(w Workflow) Workflow { return w })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getWorkflow: GET /api/v1/workflows/{id}.
func (s *Server) getWorkflow(c *call) (result, error) {
	w, err := getByID(c, s.store, store.PfxWorkflow, "workflow", func(w Workflow) bool { return ownedBy(w.Owner, c.key) })
	if err != nil {
		return result{}, err
	}
	return ok(w)
}

// deleteWorkflow: DELETE /api/v1/workflows/{id} → 204. Jobs already
// submitted keep running: each holds a copy of its workflow's steps.
func (s *Server) deleteWorkflow(c *call, tx Tx) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	var w Workflow
	if err := store.GetJSON(tx, store.Key(store.PfxWorkflow, id), &w); errors.Is(err, ErrNotFound) || (err == nil && !ownedBy(w.Owner, c.key)) {
		return result{}, notFound("no workflow %s", id)
	} else if err != nil {
		return result{}, err
	}
	if w.AppID != "" {
		if err := tx.Delete(store.Key(store.PfxAppWorkflow, w.AppID, w.ID)); err != nil {
			return result{}, err
		}
	}
	if err := tx.Delete(store.Key(store.PfxWorkflow, id)); err != nil {
		return result{}, err
	}
	return noContent()
}

// validHeaderName reports whether k is an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
