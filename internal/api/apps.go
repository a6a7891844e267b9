package api

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/flowedge/flowedge/internal/api/store"
)

// App is a named group that owns workflows (and, later, channels).
type App struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// cleanName trims a required name and checks it: at most 100 characters,
// no control characters.
func cleanName(field, v string) (string, error) {
	return cleanText(field, v, 100, true)
}

// cleanText trims v and checks it is at most max characters of UTF-8
// without control characters (newlines and tabs allowed in long text).
func cleanText(field, v string, max int, required bool) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		if required {
			return "", badRequest("%s: required", field)
		}
		return "", nil
	}
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > max {
		return "", badRequest("%s: at most %d characters of UTF-8", field, max)
	}
	for _, r := range v {
		if unicode.IsControl(r) && (max <= 100 || (r != '\n' && r != '\t' && r != '\r')) {
			return "", badRequest("%s: control characters are not allowed", field)
		}
	}
	return v, nil
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
	name, err := cleanName("name", in.Name)
	if err != nil {
		return result{}, err
	}
	desc, err := cleanText("description", in.Description, 1000, false)
	if err != nil {
		return result{}, err
	}
	a := App{ID: store.NewID(), Name: name, Description: desc, CreatedAt: time.Now().UTC()}
	if err := store.PutJSON(tx, store.Key(store.PfxApp, a.ID), a); err != nil {
		return result{}, err
	}
	return created(a, "/api/v1/apps/"+a.ID)
}

// listApps: GET /api/v1/apps, oldest first.
func (s *Server) listApps(c *call) (result, error) {
	out, err := listRecords(c.r, s.store, store.PfxApp, func(a App) App { return a })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getApp: GET /api/v1/apps/{id}.
func (s *Server) getApp(c *call) (result, error) {
	a, err := getByID[App](c, s.store, store.PfxApp, "app", nil)
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
	if found, err := store.Exists(tx, store.Key(store.PfxApp, id)); err != nil {
		return result{}, err
	} else if !found {
		return result{}, notFound("no app %s", id)
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
