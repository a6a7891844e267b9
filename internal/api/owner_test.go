package api_test

import (
	"testing"

	"github.com/flowedge/flowedge/internal/api"
)

// TestOwnerScope: apps, workflows, jobs and processes belong to the user of
// the key that created them. Another member cannot read, list, use,
// cancel or delete them, nor read or append to the process's events (404,
// 422 where she names one in a body); an admin key can. Names and
// descriptions are stored without markup. On both stores.
func TestOwnerScope(t *testing.T) {
	for name, mk := range map[string]func(testing.TB, ...func(*api.Options)) *env{"badger": newEnv, "postgres": newPGEnv} {
		t.Run(name, func(t *testing.T) { testOwnership(t, mk(t)) })
	}
}

func testOwnership(t *testing.T, e *env) {
	alice, _ := e.newKey("alice", "", "alice")
	bob, _ := e.newKey("bob", "", "bob")
	var app api.App
	must(t, e.do(req{method: "POST", path: "/api/v1/apps", key: alice,
		body: map[string]any{"name": "<b>Billing</b><script>alert(1)</script>", "description": "<i>money</i> &amp; <img src=x onerror=alert(1)>time"}}), 201).json(t, &app)
	if app.Name != "Billing" || app.Description != "money & time" || app.Owner != "alice" {
		t.Fatalf("app stored as %+v", app)
	}
	var wf api.Workflow
	must(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: alice,
		body: map[string]any{"name": "<a href='javascript:x'>nightly</a>", "app_id": app.ID, "steps": []any{delay(60_000)}}}), 201).json(t, &wf)
	if wf.Name != "nightly" || wf.Owner != "alice" {
		t.Fatalf("workflow stored as %+v", wf)
	}
	must(t, e.do(req{method: "POST", path: "/api/v1/processes/p-alice/events", key: alice, body: map[string]any{"type": "secret", "n": 1}}), 201)
	var job api.Job
	must(t, e.do(req{method: "POST", path: "/jobs", key: alice, header: map[string]string{"X-Process-ID": "p-alice"},
		body: map[string]any{"workflow_id": wf.ID, "input": "private"}}), 201).json(t, &job)

	// Bob: none of it exists for him.
	var bobWF api.Workflow
	must(t, e.do(req{method: "POST", path: "/api/v1/workflows", key: bob, body: map[string]any{"name": "mine", "steps": []any{delay(0)}}}), 201).json(t, &bobWF)
	for _, r := range []struct {
		method, path string
		body         any
		header       map[string]string
		want         int
	}{
		{"GET", "/api/v1/apps/" + app.ID, nil, nil, 404},
		{"DELETE", "/api/v1/apps/" + app.ID, nil, nil, 404},
		{"GET", "/api/v1/workflows/" + wf.ID, nil, nil, 404},
		{"DELETE", "/api/v1/workflows/" + wf.ID, nil, nil, 404},
		{"POST", "/api/v1/workflows", map[string]any{"name": "x", "app_id": app.ID, "steps": []any{delay(0)}}, nil, 422},
		{"POST", "/jobs", map[string]any{"workflow_id": wf.ID}, map[string]string{"X-Process-ID": "p-bob"}, 422},
		{"GET", "/jobs/" + job.ID, nil, nil, 404},
		{"POST", "/jobs/" + job.ID + "/cancel", nil, nil, 404},
		{"GET", "/api/v1/processes/p-alice", nil, nil, 404},
		{"GET", "/api/v1/processes/p-alice/events", nil, nil, 404},
		{"GET", "/api/v1/processes/p-alice/events/1", nil, nil, 404},
		{"POST", "/api/v1/processes/p-alice/events", map[string]any{"type": "forged"}, nil, 404},
		{"POST", "/jobs", map[string]any{"workflow_id": bobWF.ID}, map[string]string{"X-Process-ID": "p-alice"}, 404},
	} {
		got := e.do(req{method: r.method, path: r.path, key: bob, body: r.body, header: r.header})
		if got.status != r.want {
			t.Errorf("bob %s %s: %d, want %d: %s", r.method, r.path, got.status, r.want, got.body)
		}
	}
	for _, path := range []string{"/api/v1/apps", "/api/v1/workflows", "/jobs", "/jobs?process_id=p-alice", "/api/v1/processes"} {
		var l struct{ Items []map[string]any }
		must(t, e.do(req{method: "GET", path: path, key: bob}), 200).json(t, &l)
		for _, it := range l.Items {
			if it["owner"] == "alice" || it["id"] == "p-alice" {
				t.Errorf("bob lists %s: %v", path, it)
			}
		}
	}

	// The admin sees and changes all of it.
	var got api.Job
	must(t, e.do(req{method: "GET", path: "/jobs/" + job.ID, key: adminKey}), 200).json(t, &got)
	var evs struct{ Items []api.Event }
	must(t, e.do(req{method: "GET", path: "/api/v1/processes/p-alice/events", key: adminKey}), 200).json(t, &evs)
	if len(evs.Items) != 1 || evs.Items[0].Type != "secret" {
		t.Fatalf("admin reads events %+v", evs.Items)
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/apps/" + app.ID, key: adminKey}), 200)
	must(t, e.do(req{method: "GET", path: "/api/v1/workflows/" + wf.ID, key: adminKey}), 200)
	must(t, e.do(req{method: "POST", path: "/jobs/" + job.ID + "/cancel", key: adminKey}), 200).json(t, &got)
	if got.Status != api.JobCancelled {
		t.Fatalf("cancelled job %+v", got)
	}
	must(t, e.do(req{method: "DELETE", path: "/api/v1/workflows/" + wf.ID, key: adminKey}), 204)
	// Alice still reads her own.
	must(t, e.do(req{method: "GET", path: "/api/v1/apps/" + app.ID, key: alice}), 200)
	must(t, e.do(req{method: "DELETE", path: "/api/v1/apps/" + app.ID, key: alice}), 204)
}
