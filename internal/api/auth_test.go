package api_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowedge/flowedge/internal/api"
)

// TestAuthRequired: everything under /api/v1 and /jobs needs a key (401
// problem+json with WWW-Authenticate); health and metrics do not.
func TestAuthRequired(t *testing.T) {
	e := newEnv(t)
	for _, r := range []req{
		{method: "GET", path: "/api/v1/apps"},
		{method: "POST", path: "/api/v1/processes/p/events", body: map[string]any{}},
		{method: "GET", path: "/api/v1/processes/p"},
		{method: "GET", path: "/api/v1/workflows"},
		{method: "GET", path: "/api/v1/keys"},
		{method: "POST", path: "/jobs", body: map[string]any{}},
		{method: "GET", path: "/jobs"},
		{method: "GET", path: "/api/v1/apps", key: "wrong-key"},
		{method: "GET", path: "/api/v1/apps", header: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}},
	} {
		res := e.do(r)
		checkProblem(t, res, 401)
		if !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
			t.Fatalf("%s %s: WWW-Authenticate %q", r.method, r.path, res.header.Get("WWW-Authenticate"))
		}
	}
	for _, p := range []string{"/health/liveness", "/health/readiness", "/health/health", "/api/v1/health"} {
		must(t, e.do(req{method: "GET", path: p}), 200)
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/apps", key: adminKey}), 200)
	must(t, e.do(req{method: "GET", path: "/api/v1/apps", header: map[string]string{"X-API-Key": adminKey}}), 200)
}

// TestKeys: a created key's secret is shown once and works at once (Bearer
// and X-API-Key); listing never shows secrets; only admin keys manage keys;
// a deleted key stops working at once; the store holds no secret.
func TestKeys(t *testing.T) {
	e := newEnv(t)
	var k struct {
		api.APIKey
		Key string `json:"key"`
	}
	r := must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "ci"}}), 201)
	r.json(t, &k)
	if k.Key == "" || k.Role != api.RoleMember || !strings.HasPrefix(k.Key, k.Prefix) || r.header.Get("Location") != "/api/v1/keys/"+k.ID {
		t.Fatalf("created %+v (Location %q)", k, r.header.Get("Location"))
	}
	must(t, e.do(req{method: "GET", path: "/api/v1/apps", key: k.Key}), 200)
	must(t, e.do(req{method: "GET", path: "/api/v1/apps", header: map[string]string{"X-API-Key": k.Key}}), 200)

	list := must(t, e.do(req{method: "GET", path: "/api/v1/keys", key: adminKey}), 200)
	if bytes.Contains(list.body, []byte(k.Key)) || bytes.Contains(list.body, []byte(`"hash"`)) || bytes.Contains(list.body, []byte(`"key"`)) {
		t.Fatalf("key list shows a secret or hash: %s", list.body)
	}
	var l struct{ Items []api.APIKey }
	list.json(t, &l)
	if len(l.Items) != 2 || l.Items[0].Name != "bootstrap" || l.Items[0].Role != api.RoleAdmin || l.Items[1].ID != k.ID {
		t.Fatalf("keys %+v", l.Items)
	}
	one := must(t, e.do(req{method: "GET", path: "/api/v1/keys/" + k.ID, key: adminKey}), 200)
	if bytes.Contains(one.body, []byte(k.Key)) {
		t.Fatal("GET key shows the secret")
	}

	// A repeated creation (an edge retry) does not replay the secret, which
	// is never stored: it gets a 409 naming the key the first one made.
	h := map[string]string{"X-Request-ID": "delivery-key-1"}
	var first struct{ ID, Key string }
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "retried"}, header: h}), 201).json(t, &first)
	rep := e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "retried"}, header: h})
	p := checkProblem(t, rep, 409)
	if p["key_id"] != first.ID || bytes.Contains(rep.body, []byte(first.Key)) || rep.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat of a key creation: %s", rep.body)
	}
	must(t, e.do(req{method: "DELETE", path: "/api/v1/keys/" + first.ID, key: adminKey}), 204)

	// A member key cannot manage keys.
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/keys", key: k.Key, body: map[string]any{"name": "x"}}), 403)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/keys", key: k.Key}), 403)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "x", "role": "root"}}), 400)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": ""}}), 400)

	must(t, e.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: adminKey}), 204)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps", key: k.Key}), 401)
	checkProblem(t, e.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: adminKey}), 404)

	// Keys survive a restart; the bootstrap key is not created twice.
	var k2 struct{ Key string }
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "admin2", "role": "admin"}}), 201).json(t, &k2)
	e.restart()
	must(t, e.do(req{method: "GET", path: "/api/v1/keys", key: k2.Key}), 200).json(t, &l)
	if len(l.Items) != 2 {
		t.Fatalf("after restart %d keys, want 2", len(l.Items))
	}
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps", key: k.Key}), 401)

	// Stored hashed: no file of the store contains a secret.
	e.stop()
	err := filepath.Walk(e.dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, secret := range []string{adminKey, k.Key, k2.Key, first.Key} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains a key secret", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBootstrapKeyTooShort: New refuses a weak bootstrap secret.
func TestBootstrapKeyTooShort(t *testing.T) {
	store, err := api.OpenBadger(t.TempDir(), api.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := api.New(api.Options{Store: store, BootstrapKey: "short"}); err == nil {
		t.Fatal("New accepted a 5-character bootstrap key")
	}
}
