package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "api.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(nil, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" || cfg.Partition != 0 || cfg.Partitions != 1 || cfg.DataDir != "./data/api" ||
		cfg.Env != "development" || cfg.Workers != 4 || time.Duration(cfg.IdempotencyTTL) != 24*time.Hour {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// TestConfigPrecedence: flag > FLOW_* environment > file > default.
func TestConfigPrecedence(t *testing.T) {
	file := writeFile(t, `
listen = "127.0.0.1:7000"
partitions = 3
partition = 1
data_dir = "/from/file"
workers = 2
log_level = "warn"
`)
	cfg, err := loadConfig([]string{"-config", file, "-data-dir", "/from/flag"},
		envOf("FLOW_DATA_DIR", "/from/env", "FLOW_WORKERS", "7", "FLOW_PARTITION", "2", "FLOW_BOOTSTRAP_KEY", "0123456789abcdef"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/flag" || cfg.Workers != 7 || cfg.Partition != 2 || cfg.Partitions != 3 ||
		cfg.Listen != "127.0.0.1:7000" || cfg.LogLevel != "warn" || cfg.bootstrapKey != "0123456789abcdef" || cfg.partitionSource != "env FLOW_PARTITION" {
		t.Fatalf("%+v", cfg)
	}
	// FLOW_CONFIG names the file when -config is absent.
	cfg, err = loadConfig(nil, envOf("FLOW_CONFIG", file), io.Discard)
	if err != nil || cfg.DataDir != "/from/file" || cfg.Partition != 1 {
		t.Fatalf("%+v %v", cfg, err)
	}
}

// TestConfigHostname: without -partition the ordinal comes from a
// StatefulSet pod name api-flow-N.
func TestConfigHostname(t *testing.T) {
	for host, want := range map[string]int{"api-flow-2": 2, "prod-api-flow-0": 0} {
		cfg, err := loadConfig([]string{"-partitions", "3"}, envOf("HOSTNAME", host), io.Discard)
		if err != nil || cfg.Partition != want {
			t.Fatalf("HOSTNAME %s: partition %d, %v", host, cfg.Partition, err)
		}
	}
	// A flag beats the hostname.
	cfg, err := loadConfig([]string{"-partitions", "3", "-partition", "1"}, envOf("HOSTNAME", "api-flow-2"), io.Discard)
	if err != nil || cfg.Partition != 1 {
		t.Fatalf("partition %d, %v", cfg.Partition, err)
	}
	// Several partitions and no way to tell which: an error, not partition 0.
	_, err = loadConfig([]string{"-partitions", "3"}, envOf("HOSTNAME", "laptop"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "partition") {
		t.Fatalf("want a partition error, got %v", err)
	}
	// api-flow-5 with 3 partitions is out of range.
	_, err = loadConfig([]string{"-partitions", "3"}, envOf("HOSTNAME", "api-flow-5"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "partition (HOSTNAME api-flow-5)") && !strings.Contains(err.Error(), "partition: must be") {
		t.Fatalf("want an out-of-range error, got %v", err)
	}
}

// TestConfigErrors: bad values are errors naming the key (never silently
// replaced by defaults), all reported at once.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		file string
		want []string
	}{
		{args: []string{"-partitions", "0"}, want: []string{"partitions: must be at least 1"}},
		{args: []string{"-partitions", "3", "-partition", "3"}, want: []string{"partition: must be from 0 to 2"}},
		{args: []string{"-partition", "-1"}, want: []string{"partition: must be from 0 to 0"}},
		{args: []string{"-env", "staging"}, want: []string{"env: want"}},
		{env: []string{"FLOW_PARTITION", "abc"}, want: []string{"partition (env FLOW_PARTITION): want an integer"}},
		{env: []string{"FLOW_IDEMPOTENCY_TTL", "soon"}, want: []string{"idempotency_ttl (env FLOW_IDEMPOTENCY_TTL)"}},
		{args: []string{"-listen", "8080"}, want: []string{"listen: want host:port"}},
		{args: []string{"-workers", "0", "-log-level", "loud", "-data-dir", ""}, want: []string{"workers:", "log_level:", "data_dir:"}},
		{env: []string{"FLOW_BOOTSTRAP_KEY", "short"}, want: []string{"FLOW_BOOTSTRAP_KEY: must be at least 16"}},
		{file: "listen = \":1\"\nport = 9\n", want: []string{"unknown keys: port"}},
		{file: "shutdown_timeout = \"forever\"\n", want: []string{"shutdown_timeout"}},
		{file: "partitions = \"three\"\n", want: []string{"partitions"}},
		{args: []string{"-metrics-listen", "9090"}, want: []string{"metrics_listen: want host:port"}},
		{args: []string{"-listen", ":8080", "-metrics-listen", ":8080"}, want: []string{"metrics_listen: must differ from listen"}},
		{env: []string{"REDIS_URL", "localhost:6379"}, want: []string{"REDIS_URL (env REDIS_URL): want redis://"}},
		{env: []string{"STORAGE_PROVIDER", "s3", "S3_ENDPOINT", "minio:9000"},
			want: []string{"storage: S3_ENDPOINT: want an http(s)", "storage: S3_ACCESS_KEY_ID: required", "storage: CONTENT_BUCKET: required"}},
		{env: []string{"STORAGE_PROVIDER", "dropbox"}, want: []string{"storage: STORAGE_PROVIDER: want s3, aws, r2, gcp or azure"}},
	} {
		args := c.args
		if c.file != "" {
			args = append([]string{"-config", writeFile(t, c.file)}, args...)
		}
		_, err := loadConfig(args, envOf(c.env...), io.Discard)
		if err == nil {
			t.Errorf("%v %v %q: no error", c.args, c.env, c.file)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v %q: error %q lacks %q", c.args, c.env, c.file, err, w)
			}
		}
	}
}

// TestExitCodes: bad values exit 78 with every problem printed; bad syntax
// exits 2; -h exits 0.
func TestExitCodes(t *testing.T) {
	var out bytes.Buffer
	code := run(context.Background(), []string{"-partitions", "0", "-env", "x"}, envOf(), &out)
	if code != exitConfig || !strings.Contains(out.String(), "partitions: must be at least 1") || !strings.Contains(out.String(), "env: want") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if code := run(context.Background(), []string{"-no-such-flag"}, envOf(), io.Discard); code != exitUsage {
		t.Fatalf("unknown flag: exit %d", code)
	}
	if code := run(context.Background(), []string{"extra"}, envOf(), io.Discard); code != exitUsage {
		t.Fatalf("extra argument: exit %d", code)
	}
	if code := run(context.Background(), []string{"-h"}, envOf(), io.Discard); code != exitOK {
		t.Fatalf("-h: exit %d", code)
	}
	if _, err := loadConfig([]string{"-h"}, envOf(), io.Discard); !errors.Is(err, errHelp()) {
		t.Fatalf("-h: %v", err)
	}
}

// TestExampleConfig: configs/api.toml loads and is valid.
func TestExampleConfig(t *testing.T) {
	cfg, err := loadConfig([]string{"-config", "../../configs/api.toml"}, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" || cfg.Partitions != 1 || cfg.DataDir != "./data/api" {
		t.Fatalf("%+v", cfg)
	}
}

func errHelp() error { return flag.ErrHelp }

// TestConfigRateLimits: [rate_limits] in the file, FLOW_RATE_LIMIT_* and
// -rate-limit-* flags, in that order of precedence; bad rates are errors
// naming the key.
func TestConfigRateLimits(t *testing.T) {
	cfg, err := loadConfig(nil, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.RateLimits; d.Default != (api.Rate{Count: 100, Per: time.Minute}) || d.Posts != (api.Rate{Count: 30, Per: time.Minute}) ||
		d.Webhooks != (api.Rate{Count: 10, Per: time.Minute}) || d.Keys != (api.Rate{Count: 5, Per: time.Minute}) {
		t.Fatalf("defaults %+v", d)
	}
	file := writeFile(t, "[rate_limits]\ndefault = \"200/min\"\nposts = \"1/s\"\nkeys = \"50/h\"\n")
	cfg, err = loadConfig([]string{"-config", file, "-rate-limit-keys", "7/min"}, envOf("FLOW_RATE_LIMIT_POSTS", "3/s"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.RateLimits; d.Default != (api.Rate{Count: 200, Per: time.Minute}) || d.Posts != (api.Rate{Count: 3, Per: time.Second}) ||
		d.Webhooks != (api.Rate{Count: 10, Per: time.Minute}) || d.Keys != (api.Rate{Count: 7, Per: time.Minute}) {
		t.Fatalf("merged %+v", d)
	}
	for _, c := range []struct {
		args []string
		env  []string
		file string
		want string
	}{
		{file: "[rate_limits]\ndefault = \"100 per minute\"\n", want: "rate_limits.default"},
		{file: "[rate_limits]\nposts = 30\n", want: "rate_limits.posts"},
		{file: "[rate_limits]\nkeys = \"0/min\"\n", want: "count"},
		{file: "[rate_limits]\nburst = \"5/min\"\n", want: "unknown keys: rate_limits.burst"},
		{file: "rate_limits = \"5/min\"\n", want: "rate_limits"},
		{args: []string{"-rate-limit-webhooks", "10/day"}, want: "rate_limits.webhooks (flag -rate-limit-webhooks): unit \"day\""},
		{env: []string{"FLOW_RATE_LIMIT_DEFAULT", "lots"}, want: "rate_limits.default (env FLOW_RATE_LIMIT_DEFAULT): want <count>/<unit>"},
	} {
		args := c.args
		if c.file != "" {
			args = append([]string{"-config", writeFile(t, c.file)}, args...)
		}
		_, err := loadConfig(args, envOf(c.env...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v %q: error %v, want one containing %q", c.args, c.env, c.file, err, c.want)
		}
	}
}

// TestConfigAppURL: app_url from the file, APP_URL, FLOW_APP_URL or
// -app-url; origins are checked (https only in production).
func TestConfigAppURL(t *testing.T) {
	file := writeFile(t, "app_url = \"https://file.example.com\"\n")
	for _, c := range []struct {
		args []string
		env  []string
		want []string
	}{
		{args: []string{"-config", file}, want: []string{"https://file.example.com"}},
		{args: []string{"-config", file}, env: []string{"APP_URL", "https://a.example.com, https://B.example.com:8443/"}, want: []string{"https://a.example.com", "https://b.example.com:8443"}},
		{env: []string{"APP_URL", "https://a.example.com", "FLOW_APP_URL", "https://flow.example.com"}, want: []string{"https://flow.example.com"}},
		{args: []string{"-app-url", "http://localhost:3000"}, env: []string{"APP_URL", "https://a.example.com"}, want: []string{"http://localhost:3000"}},
		{want: nil},
	} {
		cfg, err := loadConfig(c.args, envOf(c.env...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cfg.origins()
		if err != nil || strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%v %v: origins %q, %v; want %q", c.args, c.env, got, err, c.want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-app-url", "app.example.com"}, "app_url: origin"},
		{[]string{"-app-url", "https://app.example.com/path"}, "app_url: origin"},
		{[]string{"-env", "production", "-app-url", "http://app.example.com"}, "production allows only https"},
		{[]string{"-trusted-proxies", "10.0.0.0/8, nope"}, "trusted_proxies: want an IP address or CIDR prefix, got \"nope\""},
	} {
		_, err := loadConfig(c.args, envOf(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
	cfg, err := loadConfig([]string{"-trusted-proxies", "10.0.0.0/8, 192.168.1.7 ,::ffff:10.1.2.3, fd00::/8"}, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	p, err := cfg.proxies()
	if err != nil || len(p) != 4 || p[0].String() != "10.0.0.0/8" || p[1].String() != "192.168.1.7/32" || p[2].String() != "10.1.2.3/32" || p[3].String() != "fd00::/8" {
		t.Fatalf("proxies %v %v", p, err)
	}
}
