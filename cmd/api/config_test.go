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
