package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/objstore"
	"github.com/redis/go-redis/v9"
)

// config is the process configuration. Each key is a flag (-data-dir), an
// environment variable (FLOW_DATA_DIR) and a key of the optional TOML file
// (data_dir); a flag beats the environment, which beats the file, which
// beats the default.
type config struct {
	Listen          string   `toml:"listen"`
	MetricsListen   string   `toml:"metrics_listen"`
	Partition       int      `toml:"partition"`
	Partitions      int      `toml:"partitions"`
	DataDir         string   `toml:"data_dir"`
	Env             string   `toml:"env"`
	Workers         int      `toml:"workers"`
	IdempotencyTTL  duration `toml:"idempotency_ttl"`
	AuditRetention  duration `toml:"audit_retention"`
	ShutdownTimeout duration `toml:"shutdown_timeout"`
	LogLevel        string   `toml:"log_level"`
	// AppURL lists the origins browsers may call the API from (CORS),
	// comma-separated; also read from APP_URL.
	AppURL string `toml:"app_url"`
	// TrustedProxies lists, comma-separated, the addresses or CIDR
	// prefixes of proxies (the edge) whose X-Forwarded-For names the client.
	TrustedProxies string           `toml:"trusted_proxies"`
	RateLimits     rateLimitsConfig `toml:"rate_limits"`

	bootstrapKey string // FLOW_BOOTSTRAP_KEY only: a secret has no flag
	redisURL     string // REDIS_URL only (it may hold a password)
	// storage is where media and backups live: STORAGE_PROVIDER and the
	// provider's variables (environment only: they hold secrets).
	storage         objstore.Config
	partitionSource string // where Partition came from, for the start-up log
	shared          bool   // DATABASE_URL is set: the database's partition count rules, Partition may exceed Partitions
}

func defaultConfig() config {
	return config{
		Listen:          ":8080",
		MetricsListen:   ":9090",
		Partition:       -1, // not set: from HOSTNAME, or 0 with one partition
		Partitions:      1,
		DataDir:         "./data/api",
		Env:             "development",
		Workers:         4,
		IdempotencyTTL:  duration(24 * time.Hour),
		AuditRetention:  duration(api.DefaultAuditRetention),
		ShutdownTimeout: duration(30 * time.Second),
		LogLevel:        "info",
		RateLimits: rateLimitsConfig{
			Default:  api.Rate{Count: 100, Per: time.Minute},
			Posts:    api.Rate{Count: 30, Per: time.Minute},
			Webhooks: api.Rate{Count: 10, Per: time.Minute},
			Keys:     api.Rate{Count: 5, Per: time.Minute},
		},
	}
}

// rateLimitsConfig is the [rate_limits] table: per-API-key rates written
// "<count>/<unit>" (units s, min, h), e.g. "100/min".
type rateLimitsConfig struct {
	Default  api.Rate `toml:"default"`
	Posts    api.Rate `toml:"posts"`
	Webhooks api.Rate `toml:"webhooks"`
	Keys     api.Rate `toml:"keys"`
}

// duration is a time.Duration written as "30s" in TOML.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// setting is one configuration key.
type setting struct {
	flag, toml, usage string
	set               func(c *config, v string) error
	get               func(c *config) string
}

func envName(flagName string) string {
	return "FLOW_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func intSetting(f, t, usage string, p func(*config) *int) setting {
	return setting{f, t, usage,
		func(c *config, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("want an integer, got %q", v)
			}
			*p(c) = n
			return nil
		},
		func(c *config) string { return strconv.Itoa(*p(c)) }}
}

func stringSetting(f, t, usage string, p func(*config) *string) setting {
	return setting{f, t, usage,
		func(c *config, v string) error { *p(c) = v; return nil },
		func(c *config) string { return *p(c) }}
}

func durationSetting(f, t, usage string, p func(*config) *duration) setting {
	return setting{f, t, usage,
		func(c *config, v string) error { return p(c).UnmarshalText([]byte(v)) },
		func(c *config) string { return time.Duration(*p(c)).String() }}
}

func rateSetting(f, t, usage string, p func(*config) *api.Rate) setting {
	return setting{f, t, usage,
		func(c *config, v string) error { return p(c).UnmarshalText([]byte(v)) },
		func(c *config) string { return p(c).String() }}
}

var settings = []setting{
	stringSetting("listen", "listen", "address to serve on, host:port", func(c *config) *string { return &c.Listen }),
	stringSetting("metrics-listen", "metrics_listen", "address of the Prometheus /metrics listener, host:port (kept off the public port)", func(c *config) *string { return &c.MetricsListen }),
	intSetting("partition", "partition", "this backend's partition ordinal (default: N of HOSTNAME api-flow-N, or 0 with one partition)", func(c *config) *int { return &c.Partition }),
	intSetting("partitions", "partitions", "number of partitions (api-flow backends)", func(c *config) *int { return &c.Partitions }),
	stringSetting("data-dir", "data_dir", "directory of the Badger store", func(c *config) *string { return &c.DataDir }),
	stringSetting("env", "env", "development or production", func(c *config) *string { return &c.Env }),
	intSetting("workers", "workers", "jobs run at once (of different processes)", func(c *config) *int { return &c.Workers }),
	durationSetting("idempotency-ttl", "idempotency_ttl", "how long answers are kept for repeated X-Request-ID / Idempotency-Key", func(c *config) *duration { return &c.IdempotencyTTL }),
	durationSetting("audit-retention", "audit_retention", "how long audit log entries are kept", func(c *config) *duration { return &c.AuditRetention }),
	durationSetting("shutdown-timeout", "shutdown_timeout", "how long SIGTERM waits for requests and jobs to stop", func(c *config) *duration { return &c.ShutdownTimeout }),
	stringSetting("log-level", "log_level", "debug, info, warn or error", func(c *config) *string { return &c.LogLevel }),
	stringSetting("app-url", "app_url", "comma-separated origins browsers may call the API from (CORS; also env APP_URL); production allows only these", func(c *config) *string { return &c.AppURL }),
	stringSetting("trusted-proxies", "trusted_proxies", "comma-separated addresses or CIDRs of proxies whose X-Forwarded-For names the client (audit log IP)", func(c *config) *string { return &c.TrustedProxies }),
	rateSetting("rate-limit-default", "rate_limits.default", "requests per API key on routes without a limit of their own, as count/unit (s, min, h)", func(c *config) *api.Rate { return &c.RateLimits.Default }),
	rateSetting("rate-limit-posts", "rate_limits.posts", "post creations per API key, as count/unit", func(c *config) *api.Rate { return &c.RateLimits.Posts }),
	rateSetting("rate-limit-webhooks", "rate_limits.webhooks", "webhook creations per API key, as count/unit", func(c *config) *api.Rate { return &c.RateLimits.Webhooks }),
	rateSetting("rate-limit-keys", "rate_limits.keys", "API key creations per API key, as count/unit", func(c *config) *api.Rate { return &c.RateLimits.Keys }),
}

// errUsage marks command-line syntax errors (exit 2) as opposed to bad
// values (exit 78).
var errUsage = errors.New("usage")

// loadConfig builds the configuration from defaults, the TOML file named by
// -config or FLOW_CONFIG, the FLOW_* environment and the flags, then checks
// it. It reports every problem at once, each naming its key and source.
func loadConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.Usage = func() {
		fmt.Fprintf(usage, "Usage: api [flags]\n\nThe api-flow backend. Each flag is also read from FLOW_<NAME> (flags win) and from the -config file.\n\n")
		fs.PrintDefaults()
	}
	raw := map[string]*string{}
	for _, s := range settings {
		raw[s.flag] = fs.String(s.flag, s.get(&cfg), s.usage)
	}
	configPath := fs.String("config", "", "optional TOML file with the same keys (data_dir, log_level, …)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	var problems []error
	bad := func(key, source string, err error) {
		problems = append(problems, fmt.Errorf("%s (%s): %v", key, source, err))
	}
	partitionSource := ""

	path, pathSource := *configPath, "flag -config"
	if !explicit["config"] {
		path, pathSource = getenv("FLOW_CONFIG"), "env FLOW_CONFIG"
	}
	if path != "" {
		defined, err := decodeFile(path, &cfg)
		if err != nil {
			return cfg, fmt.Errorf("config (%s): %w", pathSource, err)
		}
		if defined["partition"] {
			partitionSource = "file " + path
		}
	}
	for _, s := range settings {
		var v, source string
		switch {
		case explicit[s.flag]:
			v, source = *raw[s.flag], "flag -"+s.flag
		case getenv(envName(s.flag)) != "":
			v, source = getenv(envName(s.flag)), "env "+envName(s.flag)
		case s.flag == "app-url" && getenv("APP_URL") != "":
			v, source = getenv("APP_URL"), "env APP_URL"
		default:
			continue
		}
		if err := s.set(&cfg, v); err != nil {
			bad(s.toml, source, err)
			continue
		}
		if s.flag == "partition" {
			partitionSource = source
		}
	}
	cfg.bootstrapKey = getenv("FLOW_BOOTSTRAP_KEY")
	cfg.redisURL = strings.TrimSpace(getenv("REDIS_URL"))
	if cfg.redisURL != "" {
		if _, err := redis.ParseURL(cfg.redisURL); err != nil {
			bad("REDIS_URL", "env REDIS_URL", errors.New("want redis://[user:password@]host:port[/db] or rediss://…"))
		}
	}
	storage, err := objstore.FromEnv(getenv, cfg.DataDir)
	if err != nil {
		problems = append(problems, err)
	}
	cfg.storage = storage
	cfg.shared = getenv("DATABASE_URL") != ""

	if partitionSource == "" {
		host := getenv("HOSTNAME")
		if n, ok := ordinalFromHostname(host); ok {
			cfg.Partition, partitionSource = n, "HOSTNAME "+host
		} else if cfg.Partitions == 1 {
			cfg.Partition, partitionSource = 0, "default"
		} else {
			bad("partition", "not set", fmt.Errorf("with %d partitions set -partition or FLOW_PARTITION, or run as a pod named api-flow-N (HOSTNAME is %q)", cfg.Partitions, host))
		}
	}
	cfg.partitionSource = partitionSource
	problems = append(problems, cfg.validate()...)
	return cfg, errors.Join(problems...)
}

// decodeFile reads the TOML file at path into cfg. Unknown keys are errors.
func decodeFile(path string, cfg *config) (map[string]bool, error) {
	md, err := toml.DecodeFile(path, cfg)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	defined := map[string]bool{}
	for _, k := range md.Keys() {
		defined[k.String()] = true
	}
	return defined, nil
}

// ordinalFromHostname returns N of a StatefulSet pod name "…api-flow-N".
func ordinalFromHostname(host string) (int, bool) {
	m := hostnameRE.FindStringSubmatch(host)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

var hostnameRE = regexp.MustCompile(`(?:^|-)api-flow-(\d{1,6})$`)

// validate checks the values; each problem names its key.
func (c config) validate() []error {
	var p []error
	bad := func(key, format string, a ...any) { p = append(p, fmt.Errorf(key+": "+format, a...)) }
	for _, l := range []struct{ key, v string }{{"listen", c.Listen}, {"metrics_listen", c.MetricsListen}} {
		if _, port, err := net.SplitHostPort(l.v); err != nil {
			bad(l.key, "want host:port (e.g. :8080), got %q", l.v)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad(l.key, "port %q is not a number from 0 to 65535", port)
		}
	}
	if c.MetricsListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
		bad("metrics_listen", "must differ from listen (%q): the metrics stay off the public port", c.Listen)
	}
	if c.Partitions < 1 {
		bad("partitions", "must be at least 1, got %d", c.Partitions)
	} else if c.partitionSource != "" && (c.Partition < 0 || (c.Partition >= c.Partitions && !c.shared)) {
		bad("partition", "must be from 0 to %d (partitions = %d), got %d", c.Partitions-1, c.Partitions, c.Partition)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir", "must not be empty")
	}
	if c.Env != "development" && c.Env != "production" {
		bad("env", `want "development" or "production", got %q`, c.Env)
	}
	if c.Workers < 1 || c.Workers > 1024 {
		bad("workers", "must be from 1 to 1024, got %d", c.Workers)
	}
	if d := time.Duration(c.IdempotencyTTL); d < time.Minute {
		bad("idempotency_ttl", "must be at least 1m, got %v", d)
	}
	if d := time.Duration(c.AuditRetention); d < time.Hour {
		bad("audit_retention", "must be at least 1h, got %v", d)
	}
	if d := time.Duration(c.ShutdownTimeout); d < time.Second || d > time.Hour {
		bad("shutdown_timeout", "must be from 1s to 1h, got %v", d)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if _, err := c.origins(); err != nil {
		bad("app_url", "%v", err)
	}
	if _, err := c.proxies(); err != nil {
		bad("trusted_proxies", "%v", err)
	}
	if k := c.bootstrapKey; k != "" && len(k) < api.MinBootstrapKeyLen {
		bad("FLOW_BOOTSTRAP_KEY", "must be at least %d characters (it is stored as an unsalted SHA-256)", api.MinBootstrapKeyLen)
	}
	return p
}

// origins are the normalised origins of AppURL.
func (c config) origins() ([]string, error) {
	return api.ParseOrigins(c.AppURL, c.Env == "production")
}

// proxies are the prefixes of TrustedProxies; a bare address is a prefix
// of one address.
func (c config) proxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(c.TrustedProxies, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if a, err := netip.ParseAddr(item); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("want an IP address or CIDR prefix, got %q", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
}
