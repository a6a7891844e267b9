package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every *Error.
var ErrInvalid = errors.New("invalid config")

// Problem is one thing wrong with a configuration.
type Problem struct {
	Key  string // dotted key path, e.g. "partition.count" or "routes[1].mode"; "" for a syntax error
	Line int    // 1-based line in the file; 0 if unknown; a missing key points at its table
	Msg  string
}

// String formats the problem as "line 12: partition.count: must be >= 1",
// leaving out the parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem of a configuration. It wraps ErrInvalid.
type Error struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return ErrInvalid.Error()
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Validate checks every setting and returns an *Error listing all problems
// (without line numbers: Parse adds them), or nil.
func (c Config) Validate() error {
	v := &validator{}
	c.validateServer(v)
	c.validateAdmin(v)
	c.validatePartition(v)
	c.validateBackends(v)
	c.validateBuffer(v)
	c.validateRetry(v)
	c.validateDelivery(v)
	c.validateRoutes(v)
	c.validateLog(v)
	c.validateGuard(v)
	if len(v.problems) == 0 {
		return nil
	}
	return &Error{Problems: v.problems}
}

type validator struct{ problems []Problem }

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) positive(key string, n int64) {
	if n <= 0 {
		v.add(key, "must be > 0, got %d", n)
	}
}

func (v *validator) duration(key string, d Duration) {
	if d.Duration <= 0 {
		v.add(key, "must be a duration > 0, got %q", d.String())
	}
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	if val == "" {
		v.add(key, "must be set to one of %s", quoteList(allowed))
		return
	}
	v.add(key, "must be one of %s, got %q", quoteList(allowed), val)
}

func (v *validator) address(key, addr string) {
	if addr == "" {
		v.add(key, `must be set, as "host:port"`)
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "must be \"host:port\", got %q", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add(key, "port must be a number 0-65535, got %q", port)
	}
}

func (c Config) validateServer(v *validator) {
	s := c.Server
	v.address("server.address", s.Address)
	v.positive("server.max_body_bytes", s.MaxBodyBytes)
	v.positive("server.max_url_bytes", int64(s.MaxURLBytes))
	v.positive("server.max_query_bytes", int64(s.MaxQueryBytes))
	v.positive("server.max_header_bytes", int64(s.MaxHeaderBytes))
	v.oneOf("server.respond", s.Respond, RespondRelay, RespondAccept)
	v.duration("server.relay_timeout", s.RelayTimeout)
	v.duration("server.read_timeout", s.ReadTimeout)
	v.duration("server.write_timeout", s.WriteTimeout)
	v.duration("server.idle_timeout", s.IdleTimeout)
	v.duration("server.shutdown_timeout", s.ShutdownTimeout)
	if s.WriteTimeout.Duration > 0 && s.RelayTimeout.Duration > 0 && s.WriteTimeout.Duration <= s.RelayTimeout.Duration {
		v.add("server.write_timeout", "must be greater than server.relay_timeout (%s), got %s", s.RelayTimeout, s.WriteTimeout)
	}
}

func (c Config) validateAdmin(v *validator) {
	v.address("admin.address", c.Admin.Address)
	if c.Admin.Address != "" && c.Admin.Address == c.Server.Address && !strings.HasSuffix(c.Admin.Address, ":0") {
		v.add("admin.address", "must differ from server.address (%q): the admin API is never served on the public listener", c.Server.Address)
	}
	if strings.ContainsAny(c.Admin.Token, " \t\r\n") {
		v.add("admin.token", "must not contain whitespace")
	}
}

func (c Config) validatePartition(v *validator) {
	p := c.Partition
	if !isToken(p.KeyHeader) {
		v.add("partition.key_header", "must be an HTTP header name, got %q", p.KeyHeader)
	}
	switch {
	case p.Count == 0:
		v.add("partition.count", "must be set: the number of partitions (= backends), 1-%d", MaxPartitions)
	case p.Count < 1:
		v.add("partition.count", "must be >= 1, got %d", p.Count)
	case p.Count > MaxPartitions:
		v.add("partition.count", "must be <= %d, got %d", MaxPartitions, p.Count)
	}
	v.oneOf("partition.missing_key", p.MissingKey, MissingKeyReject, MissingKeySpread)
}

// MaxPipeline bounds [backends] pipeline.
const MaxPipeline = 32

func (c Config) validateBackends(v *validator) {
	b := c.Backends
	count := c.Partition.Count
	switch {
	case len(b.URLs) > 0 && b.Template != "":
		v.add("backends.template", "set either backends.urls or backends.template, not both")
	case len(b.URLs) == 0 && b.Template == "":
		v.add("backends.urls", "set backends.urls (one URL per partition) or backends.template (a URL with {N})")
	case len(b.URLs) > 0:
		if count >= 1 && len(b.URLs) != count {
			v.add("backends.urls", "must have exactly partition.count (%d) entries, got %d", count, len(b.URLs))
		}
		// The same URL may serve several partitions (tests, a single dev
		// backend); only its form is checked.
		for i, u := range b.URLs {
			if err := checkBaseURL(u); err != nil {
				v.add("backends.urls["+strconv.Itoa(i)+"]", "%v", err)
			}
		}
	default:
		if !strings.Contains(b.Template, "{N}") {
			v.add("backends.template", "must contain {N} (the partition number), got %q", b.Template)
		} else if err := checkBaseURL(strings.ReplaceAll(b.Template, "{N}", "0")); err != nil {
			v.add("backends.template", "%v", err)
		}
	}
	v.duration("backends.probe_interval", b.ProbeInterval)
	if !strings.HasPrefix(b.ProbePath, "/") {
		v.add("backends.probe_path", `must start with "/", got %q`, b.ProbePath)
	}
	v.duration("backends.timeout", b.Timeout)
	if b.BreakerFailures < 1 {
		v.add("backends.breaker_failures", "must be >= 1, got %d", b.BreakerFailures)
	}
	if b.Pipeline < 1 || b.Pipeline > MaxPipeline {
		v.add("backends.pipeline", "must be 1..%d (requests sent at once on a connection; 1 = no pipelining), got %d", MaxPipeline, b.Pipeline)
	}
	v.duration("backends.breaker_cooldown", b.BreakerCooldown)
}

// checkBaseURL accepts an absolute http(s) URL with a host and no query or fragment.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an http:// or https:// URL, got %q", s)
	}
	if u.Host == "" {
		return fmt.Errorf("must name a host, got %q", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return fmt.Errorf("must not have a query or fragment, got %q", s)
	}
	if u.User != nil {
		return fmt.Errorf("must not contain credentials, got %q", s)
	}
	return nil
}

func (c Config) validateBuffer(v *validator) {
	b := c.Buffer
	if strings.TrimSpace(b.Path) == "" {
		v.add("buffer.path", "must be set: the directory of the durable queue")
	}
	v.positive("buffer.max_bytes", b.MaxBytes)
	v.oneOf("buffer.when_full", b.WhenFull, WhenFullReject, WhenFullBlock)
	v.duration("buffer.block_timeout", b.BlockTimeout)
	v.duration("buffer.idempotency_ttl", b.IdempotencyTTL)
	v.duration("buffer.outcome_ttl", b.OutcomeTTL)
	v.positive("buffer.outcome_max_bytes", b.OutcomeMaxBytes)
}

func (c Config) validateRetry(v *validator) {
	r := c.Retry
	v.duration("retry.initial_backoff", r.InitialBackoff)
	v.duration("retry.max_backoff", r.MaxBackoff)
	if r.InitialBackoff.Duration > 0 && r.MaxBackoff.Duration > 0 && r.MaxBackoff.Duration < r.InitialBackoff.Duration {
		v.add("retry.max_backoff", "must be >= retry.initial_backoff (%s), got %s", r.InitialBackoff, r.MaxBackoff)
	}
	v.duration("retry.max_duration", r.MaxDuration)
	if r.MaxAttempts < 0 {
		v.add("retry.max_attempts", "must be >= 0 (0 = unlimited), got %d", r.MaxAttempts)
	}
	v.duration("retry.max_retry_after", r.MaxRetryAfter)
}

func (c Config) validateDelivery(v *validator) {
	d := c.Delivery
	v.oneOf("delivery.ordering", d.Ordering, OrderingKey, OrderingPartition, OrderingNone)
	if d.MaxInFlight < 1 {
		v.add("delivery.max_in_flight", "must be >= 1, got %d", d.MaxInFlight)
	}
	v.oneOf("delivery.on_dead", d.OnDead, OnDeadSkip, OnDeadPark)
	v.oneOf("delivery.protocol", d.Protocol, ProtocolRequest, ProtocolBatch)
	if !strings.HasPrefix(d.BatchPath, "/") || strings.ContainsAny(d.BatchPath, "?# ") {
		v.add("delivery.batch_path", "must be a path starting with /, got %q", d.BatchPath)
	}
	if d.BatchMax < 1 || d.BatchMax > 10000 {
		v.add("delivery.batch_max", "must be 1..10000, got %d", d.BatchMax)
	}
	if d.BatchBytes < 4096 {
		v.add("delivery.batch_bytes", "must be >= 4096, got %d", d.BatchBytes)
	}
}

func (c Config) validateRoutes(v *validator) {
	for i, r := range c.Routes {
		key := "routes[" + strconv.Itoa(i) + "]"
		if !strings.HasPrefix(r.Prefix, "/") {
			v.add(key+".prefix", `must start with "/", got %q`, r.Prefix)
		}
		for j, m := range r.Methods {
			if !isToken(m) {
				v.add(key+".methods["+strconv.Itoa(j)+"]", "must be an HTTP method, got %q", m)
			}
		}
		v.oneOf(key+".mode", r.Mode, ModeBuffer, ModeProxy)
		if r.MaxBodyBytes < 0 {
			v.add(key+".max_body_bytes", "must be 0 (server.max_body_bytes) or positive, got %d", r.MaxBodyBytes)
		}
	}
}

func (c Config) validateLog(v *validator) {
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, LogFormatJSON, LogFormatText)
}

// isToken reports whether s is an RFC 9110 token (header names, methods).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
