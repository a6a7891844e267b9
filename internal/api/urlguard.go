package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Outbound URL rules (http steps now, webhooks later): an absolute http(s)
// URL with a host and no credentials; in production HTTPS only, and the
// host may not be localhost or an address that is loopback, private,
// link-local, shared (CGNAT), multicast or unspecified — checked on the URL
// here and again on the resolved address at dial time (DNS rebinding).

var errBlockedAddr = errors.New("the address is loopback, private, link-local or otherwise internal")

// checkOutboundURL applies the rules to a URL as written.
func checkOutboundURL(raw string, production bool) error {
	if raw == "" {
		return errors.New("required")
	}
	if len(raw) > 2048 {
		return errors.New("longer than 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("want an absolute http or https URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if production {
			return errors.New("must be https in production")
		}
	default:
		return fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	if production {
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if host == "localhost" || strings.HasSuffix(host, ".localhost") {
			return errors.New("must not be localhost in production")
		}
		if ip, err := netip.ParseAddr(host); err == nil && blockedAddr(ip) {
			return errBlockedAddr
		}
	}
	return nil
}

// blockedAddr reports whether ip is not a public unicast address.
func blockedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() ||
		ip.IsUnspecified() || cgnat.Contains(ip) || ip == netip.MustParseAddr("255.255.255.255")
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// outboundClient returns the client of http steps: timeout bounds a whole
// call; in production its dialer refuses internal addresses after DNS
// resolution, and redirects (at most 5) must pass the URL rules too. It
// ignores proxy environment variables, so the dial-time check sees the real
// target.
func outboundClient(production bool, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if production {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil || blockedAddr(ip) {
				return fmt.Errorf("dial %s: %w", address, errBlockedAddr)
			}
			return nil
		}
	}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			return checkOutboundURL(req.URL.String(), production)
		},
	}
}
