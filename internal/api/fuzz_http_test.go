package api_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzAPI sends fuzzed requests through the real handler (real store,
// real HTTP server): whatever the method, path segment, headers and body,
// the answer is never a 5xx (a panic would be a 500) and always carries
// the security headers.
func FuzzAPI(f *testing.F) {
	e := newEnv(f)
	ch := e.channel(adminKey, "fuzz")
	routes := []string{
		"/api/v1/channels", "/api/v1/channels/{x}", "/api/v1/channels/" + ch.ID + "/posts", "/api/v1/channels/{x}/posts",
		"/api/v1/keys", "/api/v1/keys/{x}", "/api/v1/apps", "/api/v1/apps/{x}", "/api/v1/workflows", "/api/v1/workflows/{x}",
		"/jobs", "/jobs/{x}", "/jobs/{x}/cancel", "/api/v1/processes/{x}/events", "/api/v1/processes/{x}", "/api/v1/audit",
		"/api/v1/channels?limit={x}", "/api/v1/audit?cursor={x}&action={x}", "/{x}",
	}
	methods := []string{"GET", "POST", "DELETE", "OPTIONS", "PUT", "HEAD"}
	for i, body := range []string{
		`{"name":"<script>alert(1)</script>hello"}`,
		`{"content":"<script>alert(1)</script>hello","media":["https://x.example/a.png"]}`,
		`{"name":"k","role":"admin","user_id":"u"}`,
		`{"name":"` + strings.Repeat("é", 5000) + `"}`,
		"{\"content\":\"\xff\xfe\"}",
		strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000),
		`{"workflow_id":"x","input":{}}`,
		`{"name":"w","steps":[{"type":"http","url":"http://169.254.169.254/"}]}`,
	} {
		f.Add(uint8(i), uint8(1), "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", []byte(body), "")
	}
	f.Add(uint8(1), uint8(0), "\xff%00<script>", []byte(nil), "https://evil.example")
	f.Add(uint8(18), uint8(4), strings.Repeat("a", 3000), []byte("{}"), "\x00")
	f.Fuzz(func(t *testing.T, route, method uint8, segment string, body []byte, header string) {
		path := strings.ReplaceAll(routes[int(route)%len(routes)], "{x}", url.PathEscape(segment))
		m := methods[int(method)%len(methods)]
		hr, err := http.NewRequest(m, e.ts.URL+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		hr.Header.Set("Authorization", "Bearer "+adminKey)
		hr.Header.Set("Content-Type", "application/json")
		if header != "" && !strings.ContainsAny(header, "\r\n\x00") {
			hr.Header.Set("X-Process-ID", header)
			hr.Header.Set("Idempotency-Key", header)
			hr.Header.Set("Origin", header)
			hr.Header.Set("Access-Control-Request-Method", "POST")
		}
		res, err := e.client.Do(hr)
		if err != nil {
			return // the client refused to send it
		}
		res.Body.Close()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %s: %d", m, path, res.StatusCode)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("X-Frame-Options") != "DENY" {
			t.Fatalf("%s %s: %d without security headers", m, path, res.StatusCode)
		}
	})
}
