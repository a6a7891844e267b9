package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid file; tests append to or edit it.
const minimal = `
[partition]
count = 3

[backends]
urls = ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"]
`

func noEnv(string) (string, bool) { return "", false }

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edge.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problems loads content from a real file and returns its problems,
// failing the test if it loaded.
func problems(t *testing.T, content string) []Problem {
	t.Helper()
	_, err := Load(writeFile(t, content))
	if err == nil {
		t.Fatalf("Load succeeded, want problems; config:\n%s", content)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v does not match ErrInvalid", err)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not *Error", err)
	}
	return e.Problems
}

func findProblem(ps []Problem, key string) (Problem, bool) {
	for _, p := range ps {
		if p.Key == key {
			return p, true
		}
	}
	return Problem{}, false
}

// TestExampleConfigs loads every edge*.toml under configs/.
func TestExampleConfigs(t *testing.T) {
	root := filepath.Join("..", "..", "configs")
	var found int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), "edge") || filepath.Ext(path) != ".toml" {
			return nil
		}
		found++
		t.Run(path, func(t *testing.T) {
			cfg, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			for p := range cfg.Partition.Count {
				if cfg.BackendURL(p) == "" {
					t.Errorf("BackendURL(%d) is empty", p)
				}
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 2 {
		t.Fatalf("found %d edge*.toml files under %s, want configs/edge.toml and configs/local/edge.toml", found, root)
	}
}

// TestReferenceConfigIsDefaults checks that configs/edge.toml, which shows
// every key with its default, agrees with Default.
func TestReferenceConfigIsDefaults(t *testing.T) {
	t.Setenv("EDGE_ADMIN_TOKEN", "")
	cfg, err := Load(filepath.Join("..", "..", "configs", "edge.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Partition.Count = 3
	want.Backends.Template = "http://api-flow-{N}.api-flow:8080"
	fsync := true
	want.Buffer.Fsync = &fsync
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("configs/edge.toml differs from Default:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := parse([]byte(minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.address", cfg.Server.Address, "0.0.0.0:8080"},
		{"server.max_body_bytes", cfg.Server.MaxBodyBytes, int64(1048576)},
		{"server.max_url_bytes", cfg.Server.MaxURLBytes, 2048},
		{"server.max_query_bytes", cfg.Server.MaxQueryBytes, 1024},
		{"server.max_header_bytes", cfg.Server.MaxHeaderBytes, 65536},
		{"server.respond", cfg.Server.Respond, "relay"},
		{"server.relay_timeout", cfg.Server.RelayTimeout.Duration, 2 * time.Second},
		{"server.read_timeout", cfg.Server.ReadTimeout.Duration, 30 * time.Second},
		{"server.write_timeout", cfg.Server.WriteTimeout.Duration, 60 * time.Second},
		{"server.idle_timeout", cfg.Server.IdleTimeout.Duration, 120 * time.Second},
		{"server.shutdown_timeout", cfg.Server.ShutdownTimeout.Duration, 30 * time.Second},
		{"admin.address", cfg.Admin.Address, "127.0.0.1:8686"},
		{"admin.token", cfg.Admin.Token, ""},
		{"partition.key_header", cfg.Partition.KeyHeader, "X-Process-ID"},
		{"partition.missing_key", cfg.Partition.MissingKey, "reject"},
		{"backends.probe_interval", cfg.Backends.ProbeInterval.Duration, 2 * time.Second},
		{"backends.probe_path", cfg.Backends.ProbePath, "/health/readiness"},
		{"backends.timeout", cfg.Backends.Timeout.Duration, 10 * time.Second},
		{"backends.breaker_failures", cfg.Backends.BreakerFailures, 5},
		{"backends.breaker_cooldown", cfg.Backends.BreakerCooldown.Duration, time.Minute},
		{"buffer.path", cfg.Buffer.Path, "./data/edge"},
		{"buffer.max_bytes", cfg.Buffer.MaxBytes, int64(1 << 30)},
		{"buffer.when_full", cfg.Buffer.WhenFull, "reject"},
		{"buffer.block_timeout", cfg.Buffer.BlockTimeout.Duration, 5 * time.Second},
		{"buffer.fsync", cfg.Buffer.FsyncEnabled(), true},
		{"buffer.fsync set", cfg.Buffer.Fsync == nil, true},
		{"buffer.idempotency_ttl", cfg.Buffer.IdempotencyTTL.Duration, 24 * time.Hour},
		{"buffer.outcome_ttl", cfg.Buffer.OutcomeTTL.Duration, 24 * time.Hour},
		{"buffer.outcome_max_bytes", cfg.Buffer.OutcomeMaxBytes, int64(256 << 20)},
		{"retry.initial_backoff", cfg.Retry.InitialBackoff.Duration, 100 * time.Millisecond},
		{"retry.max_backoff", cfg.Retry.MaxBackoff.Duration, 30 * time.Second},
		{"retry.max_duration", cfg.Retry.MaxDuration.Duration, 24 * time.Hour},
		{"retry.max_attempts", cfg.Retry.MaxAttempts, 0},
		{"retry.max_retry_after", cfg.Retry.MaxRetryAfter.Duration, 5 * time.Minute},
		{"delivery.ordering", cfg.Delivery.Ordering, "key"},
		{"delivery.max_in_flight", cfg.Delivery.MaxInFlight, 64},
		{"backends.pipeline", cfg.Backends.Pipeline, 1},
		{"delivery.on_dead", cfg.Delivery.OnDead, "skip"},
		{"routes", len(cfg.Routes), 0},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDefaultAloneIsInvalid(t *testing.T) {
	err := Default().Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Default().Validate() = %v, want ErrInvalid (count and backends unset)", err)
	}
	var e *Error
	errors.As(err, &e)
	for _, key := range []string{"partition.count", "backends.urls"} {
		if _, ok := findProblem(e.Problems, key); !ok {
			t.Errorf("no problem for %s in %v", key, e)
		}
	}
}

func TestFsyncFalse(t *testing.T) {
	cfg, err := parse([]byte(minimal+"[buffer]\nfsync = false\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Buffer.FsyncEnabled() {
		t.Error("fsync = false: FsyncEnabled() = true")
	}
}

// TestProblems checks that each bad value is reported with its key and the
// line it is on.
func TestProblems(t *testing.T) {
	tests := []struct {
		name    string
		content string
		key     string
		line    int
		msg     string // substring of the message
	}{
		{
			name: "count zero",
			content: `[partition]
count = 0
[backends]
urls = []
template = "http://b-{N}:8080"
`,
			key: "partition.count", line: 2, msg: "must be set",
		},
		{
			name: "count negative",
			content: `[partition]
count = -2
[backends]
template = "http://b-{N}:8080"
`,
			key: "partition.count", line: 2, msg: ">= 1",
		},
		{
			name: "count too large",
			content: `[partition]
count = 70000
[backends]
template = "http://b-{N}:8080"
`,
			key: "partition.count", line: 2, msg: "<= 65535",
		},
		{
			name:    "unknown key",
			content: minimal + "[server]\nadress = \"0.0.0.0:8080\"\n",
			key:     "server.adress", line: 8, msg: `unknown key (did you mean "address"?)`,
		},
		{
			name:    "unknown table",
			content: minimal + "\n[metrics]\nenabled = true\n",
			key:     "metrics", line: 8, msg: "unknown key",
		},
		{
			name:    "unknown root key",
			content: "count = 3\n" + minimal,
			key:     "count", line: 1, msg: "unknown key",
		},
		{
			name: "urls not count",
			content: `[partition]
count = 3

[backends]
probe_interval = "2s"
urls = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
`,
			key: "backends.urls", line: 6, msg: "exactly partition.count (3) entries, got 2",
		},
		{
			name:    "bad duration",
			content: minimal + "[server]\nrelay_timeout = \"2 seconds\"\n",
			key:     "server.relay_timeout", line: 8, msg: `invalid duration "2 seconds"`,
		},
		{
			name:    "duration without unit",
			content: minimal + "[retry]\nmax_backoff = 30\n",
			key:     "retry.max_backoff", line: 8, msg: "must be a duration string",
		},
		{
			name:    "unknown sub-table",
			content: minimal + "[backends.extra]\n",
			key:     "backends.extra", line: 7, msg: "unknown key",
		},
		{
			name:    "negative duration",
			content: minimal + "[retry]\nmax_duration = \"-1h\"\n",
			key:     "retry.max_duration", line: 8, msg: "must be a duration > 0",
		},
		{
			name:    "bad fsync type",
			content: minimal + "[buffer]\nfsync = \"yes\"\n",
			key:     "buffer.fsync", line: 8, msg: `must be a boolean (true or false), got string "yes"`,
		},
		{
			name:    "bad enum respond",
			content: minimal + "[server]\nrespond = \"wait\"\n",
			key:     "server.respond", line: 8, msg: `must be one of "relay", "accept", got "wait"`,
		},
		{
			name:    "bad enum ordering",
			content: minimal + "[delivery]\n\n  ordering = \"fifo\"  # comment\n",
			key:     "delivery.ordering", line: 9, msg: `got "fifo"`,
		},
		{
			name:    "wrong type",
			content: minimal + "[server]\nmax_body_bytes = \"1MiB\"\n",
			key:     "server.max_body_bytes", line: 8, msg: `must be an integer, got string "1MiB"`,
		},
		{
			name:    "table as value",
			content: "server = 3\n" + minimal,
			key:     "server", line: 1, msg: "must be a table",
		},
		{
			name: "both urls and template",
			content: `[partition]
count = 1
[backends]
urls = ["http://a:1"]
template = "http://b-{N}:8080"
`,
			key: "backends.template", line: 5, msg: "not both",
		},
		{
			name: "neither urls nor template",
			content: `[partition]
count = 1
[backends]
timeout = "1s"
`,
			key: "backends.urls", line: 3, msg: "set backends.urls",
		},
		{
			name: "bad url scheme",
			content: `[partition]
count = 2
[backends]
urls = [
  "http://a:1",
  "ftp://b:2",
]
`,
			key: "backends.urls[1]", line: 4, msg: "http:// or https://",
		},
		{
			name: "template without N",
			content: `[partition]
count = 2
[backends]
template = "http://backend:8080"
`,
			key: "backends.template", line: 4, msg: "{N}",
		},
		{
			name:    "write timeout not above relay timeout",
			content: minimal + "[server]\nrelay_timeout = \"5s\"\nwrite_timeout = \"5s\"\n",
			key:     "server.write_timeout", line: 9, msg: "greater than server.relay_timeout",
		},
		{
			name:    "zero max_body_bytes",
			content: minimal + "[server]\nmax_body_bytes = 0\n",
			key:     "server.max_body_bytes", line: 8, msg: "must be > 0",
		},
		{
			name:    "bad route mode",
			content: minimal + "[[routes]]\nprefix = \"/a\"\nmode = \"proxy\"\n[[routes]]\nprefix = \"/b\"\nmode = \"queue\"\n",
			key:     "routes[1].mode", line: 12, msg: `got "queue"`,
		},
		{
			name:    "route prefix without slash",
			content: minimal + "[[routes]]\nprefix = \"api\"\nmode = \"proxy\"\n",
			key:     "routes[0].prefix", line: 8, msg: `must start with "/"`,
		},
		{
			name:    "route mode missing",
			content: minimal + "[[routes]]\nprefix = \"/api\"\n",
			key:     "routes[0].mode", line: 7, msg: "must be set to one of",
		},
		{
			name:    "bad interpolation",
			content: minimal + "[admin]\ntoken = \"${EDGE_TOKEN\"\n",
			key:     "admin.token", line: 8, msg: "unterminated ${",
		},
		{
			name:    "syntax error",
			content: minimal + "[server]\naddress = \"x\nrespond = \"relay\"\n",
			key:     "", line: 8, msg: "TOML syntax",
		},
		{
			name:    "same admin and server address",
			content: minimal + "[server]\naddress = \"127.0.0.1:8080\"\n[admin]\naddress = \"127.0.0.1:8080\"\n",
			key:     "admin.address", line: 10, msg: "must differ",
		},
		{
			name:    "bad max_in_flight",
			content: minimal + "[delivery]\nordering = \"partition\"\nmax_in_flight = 0\n",
			key:     "delivery.max_in_flight", line: 9, msg: ">= 1",
		},
		// [backends] pipeline is 1..32: 0 and 33 are refused, naming the key.
		{
			name:    "pipeline 0",
			content: minimal + "pipeline = 0\n",
			key:     "backends.pipeline", line: 7, msg: "must be 1..32",
		},
		{
			name:    "pipeline 33",
			content: minimal + "pipeline = 33\n",
			key:     "backends.pipeline", line: 7, msg: "must be 1..32",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := problems(t, tt.content)
			p, ok := findProblem(ps, tt.key)
			if !ok {
				t.Fatalf("no problem for key %q; got %v", tt.key, ps)
			}
			if p.Line != tt.line {
				t.Errorf("line = %d, want %d (%v)", p.Line, tt.line, p)
			}
			if !strings.Contains(p.Msg, tt.msg) {
				t.Errorf("msg = %q, want it to contain %q", p.Msg, tt.msg)
			}
		})
	}
}

// TestAllProblemsAtOnce checks that one bad value does not hide the others
// and that a value that failed to decode is not reported twice.
func TestAllProblemsAtOnce(t *testing.T) {
	content := `[server]
respond = "later"
relay_timeout = "soon"
bogus = 1

[partition]
count = "three"

[backends]
urls = ["http://a:1"]

[delivery]
ordering = "random"
`
	ps := problems(t, content)
	want := []Problem{
		{Key: "server.bogus", Line: 4},
		{Key: "server.relay_timeout", Line: 3},
		{Key: "server.respond", Line: 2},
		{Key: "partition.count", Line: 7},
		{Key: "delivery.ordering", Line: 13},
	}
	for _, w := range want {
		p, ok := findProblem(ps, w.Key)
		if !ok {
			t.Errorf("no problem for %s in:\n%v", w.Key, &Error{Problems: ps})
			continue
		}
		if p.Line != w.Line {
			t.Errorf("%s: line %d, want %d", w.Key, p.Line, w.Line)
		}
	}
	counts := map[string]int{}
	for _, p := range ps {
		counts[p.Key]++
	}
	for k, n := range counts {
		if n > 1 {
			t.Errorf("%s reported %d times:\n%v", k, n, &Error{Problems: ps})
		}
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Line != 0 && ps[i].Line < ps[i-1].Line {
			t.Errorf("problems not ordered by line:\n%v", &Error{Problems: ps})
			break
		}
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Problems: []Problem{
		{Key: "partition.count", Line: 12, Msg: "must be >= 1"},
		{Key: "backends.urls", Msg: "missing"},
		{Line: 3, Msg: "TOML syntax: bad"},
	}}
	want := "line 12: partition.count: must be >= 1\nbackends.urls: missing\nline 3: TOML syntax: bad"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	if !errors.Is(e, ErrInvalid) {
		t.Error("*Error does not match ErrInvalid")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Error("an unreadable file is not an invalid config")
	}
}

func TestEnvInterpolation(t *testing.T) {
	t.Setenv("FLOWEDGE_TEST_TOKEN", "s3cret")
	t.Setenv("FLOWEDGE_TEST_HOST", "10.0.0.7")
	t.Setenv("FLOWEDGE_TEST_EMPTY", "")
	t.Setenv("FLOWEDGE_TEST_TIMEOUT", "750ms")
	content := `
[admin]
token = "${FLOWEDGE_TEST_TOKEN}"

[server]
address = "${FLOWEDGE_TEST_UNSET:-0.0.0.0}:8080"
respond = "${FLOWEDGE_TEST_EMPTY:-accept}"
relay_timeout = "${FLOWEDGE_TEST_TIMEOUT}"

[partition]
count = 2
key_header = "X-Process-ID${FLOWEDGE_TEST_UNSET}"

[backends]
urls = ["http://${FLOWEDGE_TEST_HOST}:9001", "http://${FLOWEDGE_TEST_HOST}:9002"]

[buffer]
path = "/var/lib/$$edge/$HOME"
`
	cfg, err := Load(writeFile(t, content))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"token", cfg.Admin.Token, "s3cret"},
		{"address (default)", cfg.Server.Address, "0.0.0.0:8080"},
		{"respond (empty → default)", cfg.Server.Respond, "accept"},
		{"relay_timeout", cfg.Server.RelayTimeout.String(), "750ms"},
		{"key_header (unset → empty)", cfg.Partition.KeyHeader, "X-Process-ID"},
		{"urls[1]", cfg.Backends.URLs[1], "http://10.0.0.7:9002"},
		{"path ($$ and bare $)", cfg.Buffer.Path, "/var/lib/$edge/$HOME"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

// TestEnvCannotInjectSyntax checks that interpolation works on values:
// a variable holding TOML cannot add keys.
func TestEnvCannotInjectSyntax(t *testing.T) {
	t.Setenv("FLOWEDGE_TEST_EVIL", "x\"\n[admin]\ntoken = \"\"")
	cfg, err := Load(writeFile(t, minimal+"[buffer]\npath = \"${FLOWEDGE_TEST_EVIL}\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Buffer.Path != "x\"\n[admin]\ntoken = \"\"" {
		t.Errorf("path = %q", cfg.Buffer.Path)
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "E": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"${A}", "1", ""},
		{"x${A}y${A}", "x1y1", ""},
		{"${MISSING}", "", ""},
		{"${MISSING:-d}", "d", ""},
		{"${E:-d}", "d", ""},
		{"${A:-d}", "1", ""},
		{"${A:-}", "1", ""},
		{"$$", "$", ""},
		{"$${A}", "${A}", ""},
		{"$A", "$A", ""},
		{"cost: 5$", "cost: 5$", ""},
		{"${", "", "unterminated"},
		{"${A", "", "unterminated"},
		{"${}", "", "invalid variable"},
		{"${1A}", "", "invalid variable"},
		{"${A B}", "", "invalid variable"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, lookup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expand(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestModeFor(t *testing.T) {
	cfg, err := parse([]byte(minimal+`
[[routes]]
prefix = "/api/v1/reports"
methods = ["post"]
mode = "proxy"

[[routes]]
prefix = "/api/v1/cache"
mode = "buffer"

[[routes]]
prefix = "/"
methods = ["DELETE"]
mode = "proxy"
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ method, path, want string }{
		{"GET", "/api/v1/flows", "proxy"},
		{"HEAD", "/", "proxy"},
		{"OPTIONS", "/x", "proxy"},
		{"POST", "/api/v1/flows", "buffer"},
		{"PUT", "/api/v1/flows/1", "buffer"},
		{"PATCH", "/x", "buffer"},
		{"POST", "/api/v1/reports/7", "proxy"},  // first route, method case-insensitive
		{"PUT", "/api/v1/reports/7", "buffer"},  // method not listed: default
		{"GET", "/api/v1/reports/7", "proxy"},   // method not listed: default
		{"GET", "/api/v1/cache/k", "buffer"},    // no methods: all
		{"DELETE", "/api/v1/cache/k", "buffer"}, // first match wins
		{"DELETE", "/api/v1/flows/1", "proxy"},  // third route
		{"POST", "/api/v1/reportsX", "proxy"},   // plain string prefix
		{"POST", "/API/v1/reports/7", "buffer"}, // paths are case-sensitive
	}
	for _, tt := range tests {
		if got := cfg.ModeFor(tt.method, tt.path); got != tt.want {
			t.Errorf("ModeFor(%s, %s) = %s, want %s", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestMaxBodyFor(t *testing.T) {
	cfg, err := parse([]byte(minimal+`
[[routes]]
prefix = "/api/v1/media"
methods = ["POST"]
mode = "proxy"
max_body_bytes = 10485760

[[routes]]
prefix = "/api/v1/reports"
mode = "proxy"
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	def := cfg.Server.MaxBodyBytes
	for _, tt := range []struct {
		method, path string
		want         int64
	}{
		{"POST", "/api/v1/media", 10 << 20},
		{"GET", "/api/v1/media/x", def},    // method not listed
		{"POST", "/api/v1/reports/1", def}, // route without its own limit
		{"POST", "/x", def},
	} {
		if got := cfg.MaxBodyFor(tt.method, tt.path); got != tt.want {
			t.Errorf("MaxBodyFor(%s, %s) = %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
	if _, err := parse([]byte(minimal+`
[[routes]]
prefix = "/m"
mode = "proxy"
max_body_bytes = -1
`), noEnv); err == nil || !strings.Contains(err.Error(), "routes[0].max_body_bytes") {
		t.Fatalf("negative max_body_bytes: %v", err)
	}
}

func TestBackendURL(t *testing.T) {
	cfg, err := parse([]byte(`
[partition]
count = 12
[backends]
template = "http://api-flow-{N}.api-flow:8080/{N}"
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		p    int
		want string
	}{
		{0, "http://api-flow-0.api-flow:8080/0"},
		{11, "http://api-flow-11.api-flow:8080/11"},
		{12, ""},
		{-1, ""},
	}
	for _, tt := range tests {
		if got := cfg.BackendURL(tt.p); got != tt.want {
			t.Errorf("BackendURL(%d) = %q, want %q", tt.p, got, tt.want)
		}
	}

	cfg, err = parse([]byte(minimal), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.BackendURL(2); got != "http://127.0.0.1:9003" {
		t.Errorf("BackendURL(2) = %q", got)
	}
	if got := cfg.BackendURL(3); got != "" {
		t.Errorf("BackendURL(3) = %q, want empty", got)
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"100ms", 100 * time.Millisecond, "100ms"},
		{"2s", 2 * time.Second, "2s"},
		{"1m", time.Minute, "1m"},
		{"90s", 90 * time.Second, "1m30s"},
		{"24h", 24 * time.Hour, "24h"},
		{"1h0m30s", time.Hour + 30*time.Second, "1h0m30s"},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil {
			t.Fatalf("UnmarshalText(%q): %v", tt.in, err)
		}
		if d.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, d.Duration, tt.want)
		}
		out, _ := d.MarshalText()
		if string(out) != tt.out {
			t.Errorf("MarshalText(%v) = %q, want %q", tt.want, out, tt.out)
		}
	}
	for _, bad := range []string{"", "2", "2 seconds", "1d", "fast"} {
		var d Duration
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) succeeded", bad)
		}
	}
}

func TestScanKeyLines(t *testing.T) {
	src := `# comment [not.a.table]
title = "x" # trailing
[server]
address = """
multi
line [ { "
"""
"quoted.key" = 1
dotted.sub = 'lit#'
arr = [
  1, # ] comment
  "]",
]

[[routes]]
prefix = "/a"
[[routes]]
prefix = "/b"
inline = { a = 1, b = [
  2 ] }
[routes.extra]
x = 1
[log]
level = "info"
`
	kl := scanKeyLines(src)
	want := map[string]int{
		"title":                2,
		"server":               3,
		"server.address":       4,
		"server.quoted.key":    8,
		"server.dotted":        9,
		"server.dotted.sub":    9,
		"server.arr":           10,
		"routes":               15,
		"routes[0]":            15,
		"routes[0].prefix":     16,
		"routes[1]":            17,
		"routes[1].prefix":     18,
		"routes[1].inline":     19,
		"routes[1].extra":      21,
		"routes[1].extra.x":    22,
		"log.level":            24,
		"routes[1].inline.a":   0, // not recorded…
		"routes[1].missing[3]": 0,
	}
	for k, w := range want {
		if w == 0 {
			continue
		}
		if got := kl[k]; got != w {
			t.Errorf("line of %s = %d, want %d", k, got, w)
		}
	}
	// …but found through its parent.
	if got := kl.lineOf("routes[1].inline.a"); got != 19 {
		t.Errorf("lineOf(routes[1].inline.a) = %d, want 19", got)
	}
	if got := kl.lineOf("routes[1].missing[3]"); got != 17 {
		t.Errorf("lineOf(routes[1].missing[3]) = %d, want 17", got)
	}
	if got := kl.lineOf("nothing.here"); got != 0 {
		t.Errorf("lineOf(nothing.here) = %d, want 0", got)
	}
}

func TestBadInterpolationInListReportedOnce(t *testing.T) {
	ps := problems(t, "[partition]\ncount = 2\n[backends]\nurls = [\"http://a:1\", \"http://${B\"]\n")
	if len(ps) != 1 || ps[0].Key != "backends.urls[1]" || ps[0].Line != 4 {
		t.Errorf("problems = %v, want only backends.urls[1] on line 4", &Error{Problems: ps})
	}
}
