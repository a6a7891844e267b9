package api_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/google/uuid"
)

// auditPage reads one page of the audit log.
func (e *env) auditPage(query string) (items []api.AuditEntry, next string) {
	e.t.Helper()
	var l struct {
		Items      []api.AuditEntry `json:"items"`
		NextCursor string           `json:"next_cursor"`
	}
	must(e.t, e.do(req{method: "GET", path: "/api/v1/audit" + query, key: adminKey}), 200).json(e.t, &l)
	return l.Items, l.NextCursor
}

// bootstrapKey is the record of the bootstrap key.
func (e *env) bootstrapKey() api.APIKey {
	e.t.Helper()
	var l struct{ Items []api.APIKey }
	must(e.t, e.do(req{method: "GET", path: "/api/v1/keys", key: adminKey}), 200).json(e.t, &l)
	for _, k := range l.Items {
		if k.Name == "bootstrap" {
			return k
		}
	}
	e.t.Fatal("no bootstrap key")
	return api.APIKey{}
}

// TestAudit: key creation and deletion leave audit entries with every
// field; the log lists newest first, pages, filters by action, and only
// admin keys read it.
func TestAudit(t *testing.T) {
	e := newEnv(t)
	boot := e.bootstrapKey()
	if boot.UserID != api.BootstrapUserID {
		t.Fatalf("bootstrap key %+v", boot)
	}
	start := time.Now().Add(-time.Second)

	var k struct {
		api.APIKey
		Key string `json:"key"`
	}
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "ci", "user_id": "alice@example.com"},
		header: map[string]string{"X-Request-ID": "rid-create"}}), 201).json(t, &k)
	if k.UserID != "alice@example.com" || k.CreatedBy != boot.ID {
		t.Fatalf("key %+v", k.APIKey)
	}
	var shown api.APIKey
	must(t, e.do(req{method: "GET", path: "/api/v1/keys/" + k.ID, key: adminKey}), 200).json(t, &shown)
	if shown != k.APIKey {
		t.Fatalf("GET shows %+v, want %+v", shown, k.APIKey)
	}
	must(t, e.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: adminKey, header: map[string]string{"X-Request-ID": "rid-delete"}}), 204)
	// A replay changes nothing and records nothing.
	r := must(t, e.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: adminKey, header: map[string]string{"X-Request-ID": "rid-delete"}}), 204)
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("the repeated delete was not a replay")
	}

	items, next := e.auditPage("")
	if len(items) != 2 || next != "" {
		t.Fatalf("audit %+v next %q", items, next)
	}
	for i, want := range []struct{ action, rid string }{{"key.delete", "rid-delete"}, {"key.create", "rid-create"}} {
		a := items[i]
		if a.Action != want.action || a.RequestID != want.rid || a.ResourceID != k.ID || a.UserID != api.BootstrapUserID ||
			a.KeyID != boot.ID || a.IP != "127.0.0.1" || a.Timestamp.Before(start) || a.Timestamp.After(time.Now()) {
			t.Errorf("entry %d: %+v", i, a)
		}
		if _, err := uuid.Parse(a.ID); err != nil {
			t.Errorf("entry id %q", a.ID)
		}
	}
	raw := must(t, e.do(req{method: "GET", path: "/api/v1/audit", key: adminKey}), 200)
	for _, field := range []string{"id", "action", "resource_id", "user_id", "key_id", "ip", "timestamp", "request_id"} {
		if !strings.Contains(string(raw.body), `"`+field+`":`) {
			t.Errorf("audit JSON lacks %s: %s", field, raw.body)
		}
	}

	// Keys created without user_id act for the creator's user; their
	// actions are audited under it.
	aliceAdmin, aliceKey := e.newKey("alice-admin", api.RoleAdmin, "alice")
	var sub struct{ api.APIKey }
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: aliceAdmin, body: map[string]any{"name": "alice-sub"}}), 201).json(t, &sub)
	if sub.UserID != "alice" {
		t.Fatalf("sub-key user %q", sub.UserID)
	}
	items, _ = e.auditPage("?limit=1")
	if items[0].UserID != "alice" || items[0].KeyID != aliceKey.ID || items[0].ResourceID != sub.ID {
		t.Fatalf("newest entry %+v", items[0])
	}

	// Paging, newest first, and the action filter.
	var all []api.AuditEntry
	for cursor := ""; ; {
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		page, next := e.auditPage(q)
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(all) != 4 {
		t.Fatalf("%d entries over the pages", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Fatalf("not newest first: %s then %s", all[i-1].ID, all[i].ID)
		}
	}
	creates, _ := e.auditPage("?action=key.create")
	if len(creates) != 3 {
		t.Fatalf("%d key.create entries", len(creates))
	}
	for _, a := range creates {
		if a.Action != "key.create" {
			t.Fatalf("filtered entry %+v", a)
		}
	}
	if none, _ := e.auditPage("?action=webhook.create"); len(none) != 0 {
		t.Fatalf("webhook entries %+v", none)
	}

	member, _ := e.newKey("m", "", "")
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/audit", key: member}), 403)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/audit"}), 401)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/audit?cursor=nope", key: adminKey}), 400)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/audit?action=a%20b", key: adminKey}), 400)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "x", "user_id": "has space"}}), 400)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "x", "user_id": strings.Repeat("u", 129)}}), 400)

	// The request log names the user.
	found := false
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request" && m["request_id"] == "rid-create" {
			found = m["user_id"] == api.BootstrapUserID && m["key_id"] == boot.ID
		}
	}
	if !found {
		t.Fatal("no request log line with the user id")
	}
}

// TestAuditClientIP: X-Forwarded-For is believed only from a trusted
// proxy, and then only its right-most untrusted address.
func TestAuditClientIP(t *testing.T) {
	xff := map[string]string{"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
	for _, c := range []struct {
		trusted []netip.Prefix
		want    string
	}{
		{nil, "127.0.0.1"},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "203.0.113.7"},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("203.0.113.0/24")}, "198.51.100.9"},
		{[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "127.0.0.1"},
	} {
		e := newEnv(t, func(o *api.Options) { o.TrustedProxies = c.trusted })
		must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "k"}, header: xff}), 201)
		items, _ := e.auditPage("")
		if len(items) != 1 || items[0].IP != c.want {
			t.Errorf("trusted %v: IP %+v, want %s", c.trusted, items, c.want)
		}
		e.stop()
	}
}

// TestAuditRetention: entries expire after Options.AuditRetention, so the
// log cannot grow without bound.
func TestAuditRetention(t *testing.T) {
	// Flake: Badger keeps whole-second expiry times (ExpiresAt is the TTL's
	// end truncated to the second), so a 1 s retention could expire the
	// entry before the first GET; 3 s leaves it at least 2 s.
	e := newEnv(t, func(o *api.Options) { o.AuditRetention = 3 * time.Second })
	must(t, e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "short-lived"}}), 201)
	if items, _ := e.auditPage("?action=key.create"); len(items) != 1 {
		t.Fatalf("audit entries right after the creation: %d, want 1", len(items))
	}
	// Badger expires by wall-clock seconds: the entry is gone within ~3 s.
	deadline := time.Now().Add(15 * time.Second)
	for {
		items, _ := e.auditPage("?action=key.create")
		if len(items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit entry still listed 15 s after a 3 s retention: %+v", items)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
