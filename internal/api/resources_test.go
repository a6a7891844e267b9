package api_test

import (
	"strings"
	"testing"

	"github.com/flowedge/flowedge/internal/api"
)

// TestApps: create, list, get, delete; validation; an app that owns
// workflows cannot be deleted.
func TestApps(t *testing.T) {
	e := newEnv(t)
	var a api.App
	must(t, e.do(req{method: "POST", path: "/api/v1/apps", key: adminKey, body: map[string]any{"name": "  Billing  ", "description": "money"}}), 201).json(t, &a)
	if a.Name != "Billing" || a.ID == "" {
		t.Fatalf("%+v", a)
	}
	var b api.App
	must(t, e.do(req{method: "POST", path: "/api/v1/apps", key: adminKey, body: map[string]any{"name": "Search"}}), 201).json(t, &b)
	var l struct {
		Items      []api.App
		NextCursor string `json:"next_cursor"`
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/apps?limit=1", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != a.ID || l.NextCursor != a.ID {
		t.Fatalf("page 1 %+v", l)
	}
	l.NextCursor = ""
	must(t, e.do(req{method: "GET", path: "/api/v1/apps?limit=1&cursor=" + a.ID, key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != b.ID || l.NextCursor != "" {
		t.Fatalf("page 2 %+v", l)
	}
	var got api.App
	must(t, e.do(req{method: "GET", path: "/api/v1/apps/" + a.ID, key: adminKey}), 200).json(t, &got)
	if got != a {
		t.Fatalf("got %+v, want %+v", got, a)
	}

	for _, body := range []any{
		map[string]any{},
		map[string]any{"name": strings.Repeat("x", 101)},
		map[string]any{"name": "ok", "unknown": 1},
		"not json",
	} {
		checkProblem(t, e.do(req{method: "POST", path: "/api/v1/apps", key: adminKey, body: body}), 400)
	}
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps/123", key: adminKey}), 400)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps/01890a5d-ac96-774b-bcce-b302099a8057", key: adminKey}), 404)

	var w api.Workflow
	must(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey,
		body: map[string]any{"name": "w", "app_id": a.ID, "steps": []any{delay(1)}}}), 201).json(t, &w)
	checkProblem(t, e.do(req{method: "DELETE", path: "/api/v1/apps/" + a.ID, key: adminKey}), 409)
	must(t, e.do(req{method: "DELETE", path: "/api/v1/workflows/" + w.ID, key: adminKey}), 204)
	must(t, e.do(req{method: "DELETE", path: "/api/v1/apps/" + a.ID, key: adminKey}), 204)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps/" + a.ID, key: adminKey}), 404)

	// A repeated DELETE (an edge retry) answers the first answer.
	h := map[string]string{"X-Request-ID": "del-b"}
	must(t, e.do(req{method: "DELETE", path: "/api/v1/apps/" + b.ID, key: adminKey, header: h}), 204)
	must(t, e.do(req{method: "DELETE", path: "/api/v1/apps/" + b.ID, key: adminKey, header: h}), 204)
}

// TestWorkflows: create, get, list, delete, and step validation, with the
// outbound URL rules of production.
func TestWorkflows(t *testing.T) {
	e := newEnv(t)
	var w api.Workflow
	must(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey, body: map[string]any{
		"name":  "onboard",
		"steps": []any{delay(5), event(""), map[string]any{"type": "http", "method": "get", "url": "http://127.0.0.1:1/x"}},
	}}), 201).json(t, &w)
	if len(w.Steps) != 3 || w.Steps[1].EventType != "workflow.step" || w.Steps[2].Method != "GET" {
		t.Fatalf("defaults not applied: %+v", w.Steps)
	}
	var got api.Workflow
	must(t, e.do(req{method: "GET", path: "/api/v1/workflows/" + w.ID, key: adminKey}), 200).json(t, &got)
	if got.ID != w.ID || len(got.Steps) != 3 {
		t.Fatalf("%+v", got)
	}
	var l struct{ Items []api.Workflow }
	must(t, e.do(req{method: "GET", path: "/api/v1/workflows", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 {
		t.Fatalf("%+v", l)
	}
	bad := []any{
		[]any{},
		[]any{map[string]any{"type": "sleep"}},
		[]any{map[string]any{"type": "delay", "ms": -1}},
		[]any{map[string]any{"type": "delay", "ms": 5, "url": "http://x"}},
		[]any{map[string]any{"type": "http", "url": "ftp://x"}},
		[]any{map[string]any{"type": "http", "url": "/relative"}},
		[]any{map[string]any{"type": "http", "url": "http://x", "method": "TRACE"}},
		[]any{map[string]any{"type": "http", "url": "http://x", "headers": map[string]string{"Host": "y"}}},
	}
	for _, steps := range bad {
		checkProblem(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey, body: map[string]any{"name": "x", "steps": steps}}), 400)
	}
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey,
		body: map[string]any{"name": "x", "app_id": "01890a5d-ac96-774b-bcce-b302099a8057", "steps": []any{delay(1)}}}), 422)
	must(t, e.do(req{method: "DELETE", path: "/api/v1/workflows/" + w.ID, key: adminKey}), 204)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/workflows/" + w.ID, key: adminKey}), 404)

	prod := newEnv(t, func(o *api.Options) { o.Production = true })
	for _, u := range []string{"http://example.com/", "https://localhost/", "https://127.0.0.1/", "https://10.1.2.3/", "https://169.254.169.254/latest", "https://[::1]/", "https://user:pw@example.com/"} {
		checkProblem(t, prod.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey,
			body: map[string]any{"name": "x", "steps": []any{map[string]any{"type": "http", "url": u}}}}), 400)
	}
	must(t, prod.do(req{method: "POST", path: "/api/v1/workflows", key: adminKey,
		body: map[string]any{"name": "x", "steps": []any{map[string]any{"type": "http", "url": "https://example.com/hook"}}}}), 201)
	if hsts := prod.do(req{method: "GET", path: "/health/liveness"}).header.Get("Strict-Transport-Security"); hsts != "max-age=31536000" {
		t.Fatalf("production HSTS %q", hsts)
	}
}
