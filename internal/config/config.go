// Package config is the edge's configuration: the edge.toml schema, its
// defaults, a strict parser and the validation that `edge validate` and
// `edge run` share.
//
// Loading is always Default → strict TOML decode → ${ENV} interpolation →
// Validate:
//
//   - Every key has a documented default (see Default) except partition.count
//     and the backends, which must be set.
//   - Unknown keys, values of the wrong type and bad durations are errors,
//     never silently ignored or replaced by defaults.
//   - Every problem in a file is reported at once, each naming its key
//     ("partition.count") and, when it comes from the file, its line.
//     The returned error is an *Error and matches ErrInvalid with errors.Is.
//
// # Environment interpolation
//
// String values (and durations, which are TOML strings) may refer to the
// environment: ${NAME} is replaced by the value of NAME (empty when unset) and
// ${NAME:-default} by default when NAME is unset or empty. $$ is a literal $;
// a $ not followed by { or $ is kept as is. Interpolation runs on the decoded
// values, never on the raw file, so a variable cannot break the TOML syntax or
// add keys. Integers and booleans are not interpolated.
package config

import (
	"log/slog"
	"strconv"
	"strings"
)

// Accepted values of the enumerated settings.
const (
	RespondRelay  = "relay"  // wait up to relay_timeout and relay the backend's answer
	RespondAccept = "accept" // 202 as soon as the request is durable

	MissingKeyReject = "reject" // 400 when the partition key header is absent
	MissingKeySpread = "spread" // route by a fresh random key

	WhenFullReject = "reject" // 503 + Retry-After when the buffer is full
	WhenFullBlock  = "block"  // hold the client up to block_timeout, then 503

	OrderingKey       = "key"       // per-key FIFO, keys of a partition concurrent
	OrderingPartition = "partition" // strict FIFO per partition
	OrderingNone      = "none"      // no ordering

	OnDeadSkip = "skip" // later requests for a dead-lettered key flow on
	OnDeadPark = "park" // later requests for the key wait for replay/discard

	ProtocolRequest = "request" // one HTTP request per record
	ProtocolBatch   = "batch"   // multipart/mixed batches to [delivery] batch_path

	ModeBuffer = "buffer" // durable append, asynchronous delivery
	ModeProxy  = "proxy"  // synchronous pass-through to the partition's backend

	LogFormatJSON = "json"
	LogFormatText = "text"
)

// MaxPartitions is the largest accepted partition.count.
const MaxPartitions = 65535

// Config is the whole edge.toml. The zero value is not usable: start from
// Default, or use Parse/Load which do.
type Config struct {
	Server    Server    `toml:"server"`
	Admin     Admin     `toml:"admin"`
	Partition Partition `toml:"partition"`
	Backends  Backends  `toml:"backends"`
	Buffer    Buffer    `toml:"buffer"`
	Retry     Retry     `toml:"retry"`
	Delivery  Delivery  `toml:"delivery"`
	Routes    []Route   `toml:"routes"` // [[routes]], first match wins; none = method defaults
	Log       Log       `toml:"log"`
	Auth      Auth      `toml:"auth"`   // optional forward authentication (guard.go)
	Intake    Intake    `toml:"intake"` // optional per-client intake limit (guard.go)
}

// Server is the public listener: client traffic for the backends.
type Server struct {
	Address         string   `toml:"address"`          // host:port; default "0.0.0.0:8080"; port 0 picks a free port
	MaxBodyBytes    int64    `toml:"max_body_bytes"`   // larger bodies get 413; default 1 MiB
	MaxURLBytes     int      `toml:"max_url_bytes"`    // longer request URIs get 414; default 2048
	MaxQueryBytes   int      `toml:"max_query_bytes"`  // longer query strings get 414; default 1024
	MaxHeaderBytes  int      `toml:"max_header_bytes"` // larger header blocks get 431; default 64 KiB
	Respond         string   `toml:"respond"`          // RespondRelay (default) or RespondAccept
	RelayTimeout    Duration `toml:"relay_timeout"`    // how long "relay" waits for the outcome before 202; default 2s
	ReadTimeout     Duration `toml:"read_timeout"`     // whole request read; default 30s
	WriteTimeout    Duration `toml:"write_timeout"`    // whole response write; must exceed relay_timeout; default 60s
	IdleTimeout     Duration `toml:"idle_timeout"`     // keep-alive idle; default 120s
	ShutdownTimeout Duration `toml:"shutdown_timeout"` // graceful stop on SIGTERM; default 30s
}

// Admin is the operator listener: health, metrics and /edge/v1.
type Admin struct {
	Address string `toml:"address"` // host:port; default "127.0.0.1:8686"
	Token   string `toml:"token"`   // bearer token for /edge/v1/*; "" (default) = open
}

// Partition says how requests are mapped to backends.
type Partition struct {
	KeyHeader  string `toml:"key_header"`  // header holding the key; default "X-Process-ID"
	Count      int    `toml:"count"`       // number of partitions = backends; required, 1..MaxPartitions; 0 = not set
	MissingKey string `toml:"missing_key"` // MissingKeyReject (default) or MissingKeySpread
}

// Backends lists the backend of each partition and how they are watched.
// Exactly one of URLs and Template is set.
type Backends struct {
	URLs            []string `toml:"urls"`             // exactly partition.count base URLs; index = partition
	Template        string   `toml:"template"`         // base URL with "{N}" replaced by the partition number
	ProbeInterval   Duration `toml:"probe_interval"`   // readiness probe period; default 2s
	ProbePath       string   `toml:"probe_path"`       // readiness probe path; default "/health/readiness"
	Timeout         Duration `toml:"timeout"`          // per delivery attempt; default 10s
	BreakerFailures int      `toml:"breaker_failures"` // consecutive connection errors, or 5xx/timeouts from this many distinct keys, that open the breaker; default 5
	BreakerCooldown Duration `toml:"breaker_cooldown"` // how long an open breaker stays open; default 1m
	H2C             bool     `toml:"h2c"`              // request-mode delivery over cleartext HTTP/2; default false (HTTP/1.1 keep-alive)
	// Pipeline is how many requests of distinct keys a delivery worker sends
	// at once on its HTTP/1.1 connection (request mode, http:// backends;
	// ignored with h2c, https and protocol "batch"); 1..32, default 1.
	Pipeline int `toml:"pipeline"`
}

// Buffer is the durable queue.
type Buffer struct {
	Path           string   `toml:"path"`            // data directory; default "./data/edge"
	MaxBytes       int64    `toml:"max_bytes"`       // queue size bound; default 1 GiB
	WhenFull       string   `toml:"when_full"`       // WhenFullReject (default) or WhenFullBlock
	BlockTimeout   Duration `toml:"block_timeout"`   // how long "block" holds a client; default 5s
	Fsync          *bool    `toml:"fsync"`           // fsync before answering; nil = not set = true. Use FsyncEnabled.
	IdempotencyTTL Duration `toml:"idempotency_ttl"` // how long an Idempotency-Key is remembered; default 24h
	OutcomeTTL     Duration `toml:"outcome_ttl"`     // how long a final outcome is kept; default 24h
	// OutcomeMaxBytes bounds the kept outcomes (oldest dropped first);
	// default 256 MiB.
	OutcomeMaxBytes int64 `toml:"outcome_max_bytes"`
}

// FsyncEnabled reports whether appends are fsynced before the client is
// answered: true unless fsync = false was set explicitly.
func (b Buffer) FsyncEnabled() bool { return b.Fsync == nil || *b.Fsync }

// Retry is the delivery backoff policy (exponential, full jitter).
type Retry struct {
	InitialBackoff Duration `toml:"initial_backoff"` // first backoff; default 100ms
	MaxBackoff     Duration `toml:"max_backoff"`     // backoff cap; default 30s
	MaxDuration    Duration `toml:"max_duration"`    // give up (dead letter) after this long since receipt; default 24h
	MaxAttempts    int      `toml:"max_attempts"`    // give up after this many attempts; 0 (default) = unlimited
	MaxRetryAfter  Duration `toml:"max_retry_after"` // cap on a backend's Retry-After; default 5m
}

// Delivery controls ordering and concurrency towards the backends.
type Delivery struct {
	Ordering    string `toml:"ordering"`      // OrderingKey (default), OrderingPartition or OrderingNone
	MaxInFlight int    `toml:"max_in_flight"` // concurrent attempts per partition; default 64; ordering "partition" means 1
	OnDead      string `toml:"on_dead"`       // OnDeadSkip (default) or OnDeadPark
	Protocol    string `toml:"protocol"`      // ProtocolRequest (default) or ProtocolBatch
	BatchPath   string `toml:"batch_path"`    // the backends' batch endpoint; default "/_edge/batch"
	BatchMax    int    `toml:"batch_max"`     // records per batch; default 64
	BatchBytes  int    `toml:"batch_bytes"`   // encoded size bound of a batch; default 1 MiB
}

// Route sets the mode (and optionally the body limit) for requests whose
// path starts with Prefix.
type Route struct {
	Prefix  string   `toml:"prefix"`  // plain string prefix of the request path, starts with "/"; "/" matches all
	Methods []string `toml:"methods"` // HTTP methods (case-insensitive); empty = all
	Mode    string   `toml:"mode"`    // ModeBuffer or ModeProxy
	// MaxBodyBytes is the body limit of the route's requests (413 beyond);
	// 0 means server.max_body_bytes. E.g. media uploads of 10 MiB, best in
	// mode "proxy" so they do not pass through the disk queue.
	MaxBodyBytes int64 `toml:"max_body_bytes"`
}

// Log configures the process log (log/slog).
type Log struct {
	Level  string `toml:"level"`  // "debug", "info" (default), "warn" or "error"
	Format string `toml:"format"` // LogFormatJSON (default) or LogFormatText
}

// SlogLevel returns Level as a slog.Level (info for an unknown level,
// which Validate refuses).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// Default returns the configuration with every default filled in.
// Partition.Count is 0 and no backends are set: a file must provide them.
func Default() Config {
	return Config{
		Server: Server{
			Address:         "0.0.0.0:8080",
			MaxBodyBytes:    1 << 20,
			MaxURLBytes:     2048,
			MaxQueryBytes:   1024,
			MaxHeaderBytes:  64 << 10,
			Respond:         RespondRelay,
			RelayTimeout:    seconds(2),
			ReadTimeout:     seconds(30),
			WriteTimeout:    seconds(60),
			IdleTimeout:     seconds(120),
			ShutdownTimeout: seconds(30),
		},
		Admin: Admin{
			Address: "127.0.0.1:8686",
		},
		Partition: Partition{
			KeyHeader:  "X-Process-ID",
			MissingKey: MissingKeyReject,
		},
		Backends: Backends{
			ProbeInterval:   seconds(2),
			ProbePath:       "/health/readiness",
			Timeout:         seconds(10),
			BreakerFailures: 5,
			BreakerCooldown: seconds(60),
			Pipeline:        1,
		},
		Buffer: Buffer{
			Path:            "./data/edge",
			MaxBytes:        1 << 30,
			WhenFull:        WhenFullReject,
			BlockTimeout:    seconds(5),
			IdempotencyTTL:  seconds(24 * 3600),
			OutcomeTTL:      seconds(24 * 3600),
			OutcomeMaxBytes: 256 << 20,
		},
		Retry: Retry{
			InitialBackoff: millis(100),
			MaxBackoff:     seconds(30),
			MaxDuration:    seconds(24 * 3600),
			MaxAttempts:    0,
			MaxRetryAfter:  seconds(300),
		},
		Delivery: Delivery{
			Ordering:    OrderingKey,
			MaxInFlight: 64,
			OnDead:      OnDeadSkip,
			Protocol:    ProtocolRequest,
			BatchPath:   "/_edge/batch",
			BatchMax:    64,
			BatchBytes:  1 << 20,
		},
		Log: Log{
			Level:  "info",
			Format: LogFormatJSON,
		},
		Auth: Auth{
			CacheTTL: seconds(30),
			WhenDown: WhenDownAdmit,
			Timeout:  seconds(2),
		},
	}
}

// BackendURL returns the base URL of partition p's backend: URLs[p], or the
// template with every "{N}" replaced by p. It returns "" when p is outside
// [0, Partition.Count) or no backend is configured for it.
func (c Config) BackendURL(p int) string {
	if p < 0 || p >= c.Partition.Count {
		return ""
	}
	if len(c.Backends.URLs) > 0 {
		if p >= len(c.Backends.URLs) {
			return ""
		}
		return c.Backends.URLs[p]
	}
	if c.Backends.Template == "" {
		return ""
	}
	return strings.ReplaceAll(c.Backends.Template, "{N}", strconv.Itoa(p))
}

// ModeFor returns the mode (ModeBuffer or ModeProxy) for a request: the mode
// of the first route whose prefix the path starts with and whose methods
// include the method (or that lists no methods). Without a matching route,
// GET, HEAD and OPTIONS are ModeProxy and every other method ModeBuffer.
func (c Config) ModeFor(method, path string) string {
	for _, r := range c.Routes {
		if r.matches(method, path) {
			return r.Mode
		}
	}
	switch strings.ToUpper(method) {
	case "GET", "HEAD", "OPTIONS":
		return ModeProxy
	default:
		return ModeBuffer
	}
}

// MaxBodyFor returns the body limit for a request: the max_body_bytes of
// the first matching route (as ModeFor matches), else server.max_body_bytes.
func (c Config) MaxBodyFor(method, path string) int64 {
	for _, r := range c.Routes {
		if r.matches(method, path) {
			if r.MaxBodyBytes > 0 {
				return r.MaxBodyBytes
			}
			break
		}
	}
	return c.Server.MaxBodyBytes
}

func (r Route) matches(method, path string) bool {
	if !strings.HasPrefix(path, r.Prefix) {
		return false
	}
	if len(r.Methods) == 0 {
		return true
	}
	for _, m := range r.Methods {
		if strings.EqualFold(m, method) {
			return true
		}
	}
	return false
}
