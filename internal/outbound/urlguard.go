package outbound

import (
	"context"
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

// Outbound URL rules (http steps and webhooks): an absolute http(s) URL of
// at most 2048 bytes with a host and no credentials. In production: HTTPS
// only, and the host may not be localhost, an internal-looking numeric
// form, or an address that is loopback, private, link-local (cloud
// metadata included), shared (CGNAT), multicast, reserved or unspecified.
// Host names are resolved when a webhook is created and again at every
// dial, and the connection goes to an address that passed the check (DNS
// rebinding cannot lead it inside).

var ErrBlockedAddr = errors.New("the address is loopback, private, link-local or otherwise internal")

// Resolver looks up the addresses of a host name. *net.Resolver satisfies
// it; tests inject their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ResolverOr returns r, or the system resolver if r is nil.
func ResolverOr(r Resolver) Resolver {
	if r == nil {
		return net.DefaultResolver
	}
	return r
}

// CheckURL applies the rules to a URL as written.
func CheckURL(raw string, production bool) error {
	_, err := ParseURL(raw, production)
	return err
}

// ParseURL applies the rules to a URL as written and returns it
// parsed.
func ParseURL(raw string, production bool) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("required")
	}
	if len(raw) > 2048 {
		return nil, errors.New("longer than 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("want an absolute http or https URL with a host")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if production {
			return nil, errors.New("must be https in production")
		}
	default:
		return nil, fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.User != nil {
		return nil, errors.New("must not carry credentials")
	}
	if production {
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if host == "localhost" || strings.HasSuffix(host, ".localhost") {
			return nil, errors.New("must not be localhost in production")
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			if BlockedAddr(ip) {
				return nil, ErrBlockedAddr
			}
		} else if numericHost(host) {
			// 127.1, 2130706433, 0x7f000001: not names, and some resolvers
			// (getaddrinfo) read them as addresses.
			return nil, errors.New("the host is neither an IP address nor a DNS name")
		}
	}
	return u, nil
}

// numericHost reports whether host's last label is a number (decimal or
// 0x hex): no DNS name ends so.
func numericHost(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	digits := "0123456789"
	if h, ok := strings.CutPrefix(last, "0x"); ok {
		last, digits = h, "0123456789abcdef"
	}
	return strings.Trim(last, digits) == ""
}

// Ranges that are not public unicast besides what netip's predicates cover.
var (
	blockedPrefixes = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
		netip.MustParsePrefix("100.64.0.0/10"),  // shared address space (CGNAT; Alibaba metadata)
		netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments (Oracle metadata 192.0.0.192)
		netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
		netip.MustParsePrefix("::/96"),          // IPv4-compatible (deprecated), ::, ::1
		netip.MustParsePrefix("100::/64"),       // discard-only
		netip.MustParsePrefix("2001::/32"),      // Teredo: hides an IPv4 address
		netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated)
		netip.MustParsePrefix("2001:db8::/32"),  // documentation
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	}
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64: the IPv4 address is the last 32 bits
	sixToFour = netip.MustParsePrefix("2002::/16")    // 6to4: the IPv4 address is bits 16–47
)

// BlockedAddr reports whether ip is not a public unicast address, looking
// through IPv4-mapped, NAT64 and 6to4 forms at the IPv4 address they carry.
func BlockedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return BlockedAddr(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case sixToFour.Contains(ip):
			return BlockedAddr(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	return false
}

// CheckHostPublic resolves host with res and fails unless it has at least
// one address and every address is public. An IP literal is checked as is.
// Its errors reach callers (a webhook creation's 422, a job step's error),
// so they never name an address the host resolved to or the DNS server
// asked: the API must not be a probe of the internal network.
func CheckHostPublic(ctx context.Context, res Resolver, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		if BlockedAddr(ip) {
			return nil, fmt.Errorf("%s: %w", ip, ErrBlockedAddr)
		}
		return []netip.Addr{ip}, nil
	}
	addrs, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) {
			anon := *de
			anon.Server = ""
			err = &anon
		}
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	for _, a := range addrs {
		if BlockedAddr(a) {
			return nil, fmt.Errorf("%s resolves to an internal address: %w", host, ErrBlockedAddr)
		}
	}
	return addrs, nil
}

// guardedDialer resolves the host itself (with the injected resolver) and
// dials the addresses it got. In production it refuses a host any of whose
// addresses is internal, and its net.Dialer checks the address of the
// socket once more just before connecting.
type guardedDialer struct {
	production bool
	resolver   Resolver
	dialer     *net.Dialer
}

func newGuardedDialer(production bool, res Resolver) *guardedDialer {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if production {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || BlockedAddr(ap.Addr()) {
				return fmt.Errorf("dial %s: %w", address, ErrBlockedAddr)
			}
			return nil
		}
	}
	return &guardedDialer{production: production, resolver: ResolverOr(res), dialer: d}
}

// DialContext dials address ("host:port") at one of its vetted addresses.
func (g *guardedDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	var addrs []netip.Addr
	if g.production {
		if addrs, err = CheckHostPublic(ctx, g.resolver, host); err != nil {
			return nil, fmt.Errorf("dial %s: %w", address, err)
		}
	} else if ip, perr := netip.ParseAddr(host); perr == nil {
		addrs = []netip.Addr{ip}
	} else if addrs, err = g.resolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, fmt.Errorf("dial %s: resolve: %w", address, err)
	}
	var errs []error
	for _, a := range addrs {
		conn, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("dial %s: no addresses", address)
	}
	return nil, errors.Join(errs...)
}

// Transport is the transport of outbound calls: its dialer enforces
// the rules, and it ignores proxy environment variables, so the dial-time
// check sees the real target.
func Transport(production bool, res Resolver, timeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           newGuardedDialer(production, res).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
}

// Client returns the client of http steps: timeout bounds a whole
// call; in production its dialer refuses internal addresses after DNS
// resolution (res; nil means the system resolver), and redirects (at most
// 5) must pass the URL rules too.
func Client(production bool, timeout time.Duration, res Resolver) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: Transport(production, res, timeout),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			return CheckURL(req.URL.String(), production)
		},
	}
}
