package api

import (
	"errors"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
)

// App is a named group that owns workflows (and, later, channels).
type App struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Owner       string    `json:"owner,omitempty"` // user id of the key that created it; "" (stored before owners) means admin keys only
	CreatedAt   time.Time `json:"created_at"`
}

// cleanName checks a required name and removes its markup (plainText):
// at most 100 characters, no control characters.
func (s *Server) cleanName(field, v string) (string, error) {
	return plainText(s.text, field, v, 100, true, false)
}

type appInput struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// createApp: POST /api/v1/apps {name, description} → 201 App.
func (s *Server) createApp(c *call, tx Tx) (result, error) {
	var in appInput
	if err := decodeJSON(c.body, &in); err != nil {
		return result{}, err
	}
	name, err := s.cleanName("name", in.Name)
	if err != nil {
		return result{}, err
	}
	desc, err := plainText(s.text, "description", in.Description, 1000, false, true)
	if err != nil {
		return result{}, err
	}
	a := App{ID: store.NewID(), Name: name, Description: desc, Owner: c.key.user(), CreatedAt: time.Now().UTC()}
	if err := store.PutJSON(tx, store.Key(store.PfxApp, a.ID), a); err != nil {
		return result{}, err
	}
	return created(a, "/api/v1/apps/"+a.ID)
}

// listApps: GET /api/v1/apps, oldest first: the caller's (all for an
// admin key).
func (s *Server) listApps(c *call) (result, error) {
	out, err := listRecordsWhere(c.r, s.store, store.PfxApp, func(a App) bool { return ownedBy(a.Owner, c.key) }, func(a App) App { return a })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getApp: GET /api/v1/apps/{id}.
func (s *Server) getApp(c *call) (result, error) {
	a, err := getByID(c, s.store, store.PfxApp, "app", func(a App) bool { return ownedBy(a.Owner, c.key) })
	if err != nil {
		return result{}, err
	}
	return ok(a)
}

// deleteApp: DELETE /api/v1/apps/{id} → 204; 409 while it owns workflows.
func (s *Server) deleteApp(c *call, tx Tx) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	var a App
	if err := store.GetJSON(tx, store.Key(store.PfxApp, id), &a); errors.Is(err, ErrNotFound) || (err == nil && !ownedBy(a.Owner, c.key)) {
		return result{}, notFound("no app %s", id)
	} else if err != nil {
		return result{}, err
	}
	owns := false
	if err := tx.Scan(store.Key(store.PfxAppWorkflow, id, ""), nil, func(_, _ []byte) (bool, error) {
		owns = true
		return false, nil
	}); err != nil {
		return result{}, err
	}
	if owns {
		return result{}, conflict("app %s still owns workflows; delete them first", id)
	}
	if err := tx.Delete(store.Key(store.PfxApp, id)); err != nil {
		return result{}, err
	}
	return noContent()
}
