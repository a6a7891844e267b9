package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPprofBehindToken: /debug/pprof/ answers only with the admin token,
// and with it serves the index, a named profile and a short CPU profile.
func TestPprofBehindToken(t *testing.T) {
	h := &Handler{opt: Options{Token: "tok"}, mux: http.NewServeMux()}
	h.pprofRoutes()
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline"} {
		if code, _ := get(p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without token = %d, want 401", p, code)
		}
		if code, _ := get(p, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token = %d, want 401", p, code)
		}
	}
	if code, body := get("/debug/pprof/", "tok"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("index with token = %d %.80q", code, body)
	}
	if code, body := get("/debug/pprof/goroutine?debug=1", "tok"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile with token = %d %.80q", code, body)
	}
	if code, body := get("/debug/pprof/profile?seconds=1", "tok"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("CPU profile with token = %d, %d bytes", code, len(body))
	}
}
