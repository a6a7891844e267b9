package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheckOutboundURL(t *testing.T) {
	for _, c := range []struct {
		url        string
		production bool
		ok         bool
	}{
		{"https://example.com/hook", true, true},
		{"https://93.184.216.34/hook", true, true},
		{"http://example.com/hook", true, false},
		{"http://example.com/hook", false, true},
		{"http://127.0.0.1:8080/", false, true},
		{"https://127.0.0.1/", true, false},
		{"https://[::1]/", true, false},
		{"https://[::ffff:10.0.0.1]/", true, false},
		{"https://192.168.1.1/", true, false},
		{"https://100.64.0.1/", true, false},
		{"https://169.254.169.254/", true, false},
		{"https://0.0.0.0/", true, false},
		{"https://localhost/", true, false},
		{"https://api.localhost./", true, false},
		{"https://u:p@example.com/", false, false},
		{"ftp://example.com/", false, false},
		{"example.com/x", false, false},
		{"", false, false},
		{"https://example.com/" + strings.Repeat("a", 2100), false, false},
	} {
		err := checkOutboundURL(c.url, c.production)
		if (err == nil) != c.ok {
			t.Errorf("checkOutboundURL(%q, production=%v) = %v, want ok=%v", c.url, c.production, err, c.ok)
		}
	}
}

// TestOutboundDialGuard: in production the client refuses internal
// addresses at dial time, whatever the URL said (DNS rebinding).
func TestOutboundDialGuard(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	resp, err := outboundClient(false, 5*time.Second).Get(srv.URL)
	if err != nil {
		t.Fatalf("development client: %v", err)
	}
	resp.Body.Close()
	_, err = outboundClient(true, 5*time.Second).Get(srv.URL)
	if !errors.Is(err, errBlockedAddr) {
		t.Fatalf("production client reached loopback: %v", err)
	}
}
