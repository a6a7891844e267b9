package api_test

import (
	"strings"
	"testing"

	"github.com/flowedge/flowedge/internal/api"
)

// preflight sends a CORS preflight for a POST with the API's headers.
func (e *env) preflight(origin string) resp {
	e.t.Helper()
	return e.do(req{method: "OPTIONS", path: "/api/v1/channels", header: map[string]string{
		"Origin":                        origin,
		"Access-Control-Request-Method": "POST",
		// As browsers send it: lower case, sorted, comma-separated.
		"Access-Control-Request-Headers": "authorization,content-type,idempotency-key,x-api-key,x-process-id,x-request-id",
	}})
}

// TestCORS: a preflight from an allowed origin succeeds without an API key
// and names the origin, method and headers; one from another origin gets
// no Access-Control-Allow-Origin. Production allows only the AppURLs;
// development also allows localhost origins.
func TestCORS(t *testing.T) {
	for _, c := range []struct {
		production       bool
		allowed, refused []string
	}{
		{false,
			[]string{"https://app.example.com", "http://localhost:3000", "http://localhost", "https://127.0.0.1:8443", "http://[::1]:5173", "http://LOCALHOST:3000"},
			[]string{"https://evil.example", "http://localhost.evil.example", "https://app.example.com.evil.example", "http://app.example.com", "null", "http://localhost:99999", "http://127.0.0.2"}},
		{true,
			[]string{"https://app.example.com", "https://admin.example.com:8443"},
			[]string{"http://localhost:3000", "http://127.0.0.1", "https://evil.example", "http://app.example.com", "null"}},
	} {
		e := newEnv(t, func(o *api.Options) {
			o.Production = c.production
			o.AppURLs = []string{"https://app.example.com/", "https://Admin.Example.com:8443"}
		})
		for _, origin := range c.allowed {
			r := e.preflight(origin)
			if r.status != 204 || r.header.Get("Access-Control-Allow-Origin") != origin {
				t.Fatalf("production=%v %s: %d, Allow-Origin %q", c.production, origin, r.status, r.header.Get("Access-Control-Allow-Origin"))
			}
			if m := r.header.Get("Access-Control-Allow-Methods"); m != "POST" {
				t.Fatalf("%s: Allow-Methods %q", origin, m)
			}
			allowHeaders := strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
			for _, h := range []string{"authorization", "x-api-key", "x-process-id", "idempotency-key", "x-request-id", "content-type"} {
				if !strings.Contains(allowHeaders, h) {
					t.Fatalf("%s: Allow-Headers %q lacks %s", origin, allowHeaders, h)
				}
			}
			if r.header.Get("Access-Control-Allow-Credentials") != "" || r.header.Get("Access-Control-Max-Age") == "" {
				t.Fatalf("%s: %v", origin, r.header)
			}
			if r.header.Get("X-Frame-Options") != "DENY" || (c.production != (r.header.Get("Strict-Transport-Security") != "")) {
				t.Fatalf("%s: preflight without the security headers: %v", origin, r.header)
			}
			// The actual request from that origin can read the answer.
			g := must(t, e.do(req{method: "GET", path: "/api/v1/channels", key: adminKey, header: map[string]string{"Origin": origin}}), 200)
			if g.header.Get("Access-Control-Allow-Origin") != origin || !strings.Contains(g.header.Get("Access-Control-Expose-Headers"), "Ratelimit-Remaining") {
				t.Fatalf("%s: actual request headers %v", origin, g.header)
			}
		}
		for _, origin := range c.refused {
			r := e.preflight(origin)
			if r.header.Get("Access-Control-Allow-Origin") != "" || r.header.Get("Access-Control-Allow-Methods") != "" {
				t.Fatalf("production=%v %s: allowed: %v", c.production, origin, r.header)
			}
			if r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("%s: no security headers", origin)
			}
			g := must(t, e.do(req{method: "GET", path: "/api/v1/channels", key: adminKey, header: map[string]string{"Origin": origin}}), 200)
			if g.header.Get("Access-Control-Allow-Origin") != "" {
				t.Fatalf("%s: actual request allowed", origin)
			}
		}
		// A preflight for a header the API does not take is refused.
		r := e.do(req{method: "OPTIONS", path: "/api/v1/channels", header: map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-evil"}})
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight for x-evil allowed: %v", r.header)
		}
	}
}

// TestCORSOptions: AppURLs must be origins; production wants https.
func TestCORSOptions(t *testing.T) {
	for in, want := range map[string]string{
		"https://App.Example.com":     "https://app.example.com",
		"https://app.example.com/":    "https://app.example.com",
		"https://app.example.com:443": "https://app.example.com",
		"http://localhost:80":         "http://localhost",
		"http://localhost:3000":       "http://localhost:3000",
		" https://[::1]:8443 ":        "https://[::1]:8443",
	} {
		got, err := api.NormalizeOrigin(in, false)
		if err != nil || got != want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "app.example.com", "ftp://app.example.com", "https://app.example.com/path", "https://u@app.example.com",
		"https://app.example.com?x", "https://app.example.com#f", "https://:443", "https://app.example.com:0", "https://app.example.com:99999", "*"} {
		if got, err := api.NormalizeOrigin(bad, false); err == nil {
			t.Errorf("NormalizeOrigin(%q) = %q, no error", bad, got)
		}
	}
	if _, err := api.NormalizeOrigin("http://app.example.com", true); err == nil {
		t.Error("http origin accepted in production")
	}
	got, err := api.ParseOrigins(" https://a.example.com, ,https://b.example.com:8443/ ", true)
	if err != nil || len(got) != 2 || got[0] != "https://a.example.com" || got[1] != "https://b.example.com:8443" {
		t.Fatalf("ParseOrigins: %q %v", got, err)
	}
	store, err := api.OpenBadger(t.TempDir(), api.BadgerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := api.New(api.Options{Store: store, AppURLs: []string{"http://app.example.com"}, Production: true}); err == nil || !strings.Contains(err.Error(), "AppURLs") {
		t.Fatalf("New with an http AppURL in production: %v", err)
	}
}
