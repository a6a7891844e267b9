package outbound

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
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
		{"https://127.1/", true, false},
		{"https://2130706433/", true, false},
		{"https://0x7f000001/", true, false},
		{"https://[fd00:ec2::254]/", true, false},
		{"https://[64:ff9b::7f00:1]/", true, false},
		{"https://hooks.example.com.:8443/x", true, true},
		{"https:///nohost", false, false},
	} {
		err := CheckURL(c.url, c.production)
		if (err == nil) != c.ok {
			t.Errorf("CheckURL(%q, production=%v) = %v, want ok=%v", c.url, c.production, err, c.ok)
		}
	}
}

// TestOutboundDialGuard: in production the client refuses internal
// addresses at dial time, whatever the URL said (DNS rebinding).
func TestOutboundDialGuard(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	resp, err := Client(false, 5*time.Second, nil).Get(srv.URL)
	if err != nil {
		t.Fatalf("development client: %v", err)
	}
	resp.Body.Close()
	_, err = Client(true, 5*time.Second, nil).Get(srv.URL)
	if !errors.Is(err, ErrBlockedAddr) {
		t.Fatalf("production client reached loopback: %v", err)
	}
}

// TestBlockedAddr: addresses that lead inside, in their disguises.
func TestBlockedAddr(t *testing.T) {
	for _, c := range []struct {
		addr    string
		blocked bool
	}{
		{"93.184.216.34", false},
		{"2606:2800:220:1:248:1893:25c8:1946", false},
		{"64:ff9b::5db8:d822", false}, // NAT64 of 93.184.216.34
		{"127.0.0.1", true},
		{"10.0.0.1", true},
		{"172.16.0.1", true},
		{"192.168.0.1", true},
		{"169.254.169.254", true}, // cloud metadata
		{"fd00:ec2::254", true},   // AWS metadata over IPv6
		{"100.100.100.200", true}, // Alibaba metadata (CGNAT range)
		{"192.0.0.192", true},     // Oracle metadata
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"255.255.255.255", true},
		{"240.0.0.1", true},
		{"224.0.0.1", true},
		{"::", true},
		{"::1", true},
		{"::127.0.0.1", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"fec0::1", true},
		{"ff02::1", true},
		{"64:ff9b::7f00:1", true},    // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", true}, // NAT64 of 169.254.169.254
		{"2002:7f00:1::", true},      // 6to4 of 127.0.0.1
		{"2002:a00:1::", true},       // 6to4 of 10.0.0.1
		{"2001::1", true},            // Teredo
	} {
		if got := BlockedAddr(netip.MustParseAddr(c.addr)); got != c.blocked {
			t.Errorf("BlockedAddr(%s) = %v, want %v", c.addr, got, c.blocked)
		}
	}
}

// mapResolver answers from a table.
type mapResolver map[string]string

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, ok := m[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{netip.MustParseAddr(a)}, nil
}

// TestOutboundDialResolver: the dialer resolves with the injected resolver;
// in production a name that resolves to loopback is refused before any
// connection, in development it is dialed.
func TestOutboundDialResolver(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	target := "http://inside.example.test:" + u.Port() + "/"
	res := mapResolver{"inside.example.test": "127.0.0.1"}

	resp, err := Client(false, 5*time.Second, res).Get(target)
	if err != nil {
		t.Fatalf("development client: %v", err)
	}
	resp.Body.Close()
	_, err = Client(true, 5*time.Second, res).Get(target)
	if !errors.Is(err, ErrBlockedAddr) {
		t.Fatalf("production client: %v, want ErrBlockedAddr", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("%d requests reached the server, want 1 (development only)", hits.Load())
	}
}
