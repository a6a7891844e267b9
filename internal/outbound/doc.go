// Package outbound guards the API's calls to URLs its clients name
// (webhook deliveries, workflow http steps).
//
// Guarantees:
//   - URL rules (CheckURL, ParseURL): absolute http(s), a host, no userinfo,
//     at most 2048 bytes; in production https only.
//   - In production neither the host as written nor any address it resolves
//     to may be loopback, private, link-local (cloud metadata included),
//     CGNAT, multicast, reserved or unspecified, also inside IPv4-mapped,
//     NAT64 and 6to4 forms. Client and Transport resolve again at every dial
//     and connect to a vetted address, so DNS rebinding cannot reach inside;
//     proxy variables are ignored.
//   - Breakers keeps one circuit breaker per target host: BreakerFailures
//     consecutive failures (connection errors, timeouts, 408, 429, 5xx) open
//     it; while open nothing is sent; after the cooldown one probe decides.
package outbound
